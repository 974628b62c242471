//! Progress bars.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` units drawn with `template` after the message.
fn styled(total: u64, message: &str, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    // The templates are constants; should one ever be malformed, a plain bar beats a panic.
    let style = ProgressStyle::with_template(&format!("{{msg:>12}} [{{bar:30}}] {template}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(message.to_string());
    bar
}

/// A bar over `total` units with a message.
pub fn bar(total: u64, message: &str) -> ProgressBar {
    styled(total, message, "{pos}/{len} {per_sec} eta {eta}")
}

/// A bar over `total` bytes (size, rate and time left); `total` 0 when unknown.
pub fn bytes(total: u64, message: &str) -> ProgressBar {
    styled(total, message, "{bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
}

/// Download progress as a byte bar per transfer, on standard error.
#[derive(Default)]
pub struct DownloadBar(Option<ProgressBar>);

impl maskdit_registry::DownloadProgress for DownloadBar {
    fn start(&mut self, _file: &str, done: u64, total: Option<u64>) {
        let bar = bytes(total.unwrap_or(0), "download");
        bar.set_position(done);
        self.0 = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// A spinner for work of unknown length.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
