//! Helpers the end-to-end tests share: running the `maskdit` binary cargo built for them.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `maskdit args` offline.
pub fn maskdit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskdit")).args(args).env("HF_HUB_OFFLINE", "1").output().expect("run maskdit")
}

/// Runs a command that must succeed.
pub fn ok(args: &[&str]) -> Output {
    let out = maskdit(args);
    assert!(out.status.success(), "maskdit {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs a command that must fail with an error line and no panic, and returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = maskdit(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "maskdit {args:?} should have failed:\n{err}");
    assert!(err.contains("error:"), "no error line for {args:?}: {err}");
    assert!(!err.contains("panicked"), "maskdit {args:?} panicked: {err}");
    err
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
