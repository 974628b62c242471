//! File handling shared by the maskdit crates: reading weights files (only the safetensors
//! tensors asked for, PyTorch pickles tensor by tensor) and writing files so that a failure never leaves a partial
//! or damaged file behind, and owning a folder while writing it.
//!
//! ```no_run
//! use std::io::Write;
//!
//! # fn main() -> maskdit_io::Result<()> {
//! // Either the whole text lands in `notes.txt`, or the old file stays as it was.
//! maskdit_io::write_atomic("notes.txt".as_ref(), |file| file.write_all(b"hello\n"))?;
//! // Only the tensors whose names start with `ema/` are read, renamed without the prefix.
//! let ema = maskdit_io::read_tensors("run.safetensors".as_ref(), "ema", |name| {
//!     name.strip_prefix("ema/").map(str::to_string)
//! })?;
//! # let _ = ema;
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod atomic;
mod error;
mod folder_lock;
mod images;
mod legacy;
mod printable;
mod tensor_files;

pub use atomic::{append_line, replace_file, write_atomic};
pub use error::{Error, Result};
pub use folder_lock::{Access, FolderLock, LOCK_FILE};
pub use images::{open_image, MAX_IMAGE_SIDE};
pub use printable::{printable, printable_lines};
pub use tensor_files::{bytes_read_on_this_thread, is_safetensors, read_header, read_tensors, Header};
