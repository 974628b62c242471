//! Errors of rank discovery, rendezvous and collectives.

/// Everything that can go wrong between ranks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launch settings (torchrun-style variables or options) are not usable.
    #[error("data-parallel launch: {0}")]
    Launch(String),

    /// Rank 0 could not be reached, or a rank did not arrive, within the rendezvous time.
    #[error("rendezvous at {address}: {reason}")]
    Rendezvous {
        /// MASTER_ADDR:MASTER_PORT.
        address: String,
        /// What happened.
        reason: String,
    },

    /// Another rank closed its connection: it stopped or died.
    #[error("rank {rank} is gone (its connection closed: {reason}); the run stops on every rank")]
    PeerLost {
        /// The rank that vanished (as seen from here).
        rank: usize,
        /// The socket's report.
        reason: String,
    },

    /// Another rank did not answer within the collective time limit.
    #[error("rank {rank} did not answer within {seconds} s (hung, or much slower than the others); raise --dist-timeout if it is only slow")]
    Timeout {
        /// The silent rank.
        rank: usize,
        /// The time waited.
        seconds: u64,
    },

    /// A peer sent something that does not follow the protocol (another program or version).
    #[error("protocol: {0}")]
    Protocol(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result type of the parallel crate.
pub type Result<T> = std::result::Result<T, Error>;
