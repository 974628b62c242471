//! One module per subcommand: its arguments and what it runs.

pub(crate) mod bench;
pub(crate) mod convert;
pub(crate) mod download;
pub(crate) mod encode;
pub(crate) mod fid;
pub(crate) mod generate;
pub(crate) mod list;
pub(crate) mod serve;
pub(crate) mod train;
pub(crate) mod train_eval;
