//! How downloads report their progress to the caller (the library itself never prints).

/// Receives the progress of each file transfer.
pub trait DownloadProgress {
    /// A transfer of `file` begins with `done` bytes already present (a resumed download) out
    /// of `total` (`None` when the server announces no length).
    fn start(&mut self, file: &str, done: u64, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// The transfer ended (whole or not).
    fn finish(&mut self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl DownloadProgress for Quiet {
    fn start(&mut self, _: &str, _: u64, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}
