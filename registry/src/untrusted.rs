//! Checks on names that come from outside (a Hub's listing and headers, a registry file) before
//! they become paths in the cache or addresses to send a token to.

use std::path::Path;

use maskdit_io::printable;

use crate::{Error, Result};

/// The longest repository path accepted (the Hub's own limit is far below).
const MAX_PATH: usize = 4096;

fn refuse(what: &str, value: &str, why: &str) -> Error {
    Error::Unsafe(format!("{what} `{}` {why}; nothing was written", printable(value)))
}

/// A path inside a repository: relative, `/`-separated, no empty, `.` or `..` parts, no
/// backslash, drive prefix or control character.
pub fn repo_path(what: &str, path: &str) -> Result<()> {
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(refuse(what, path, "is empty or too long for a file path"));
    }
    if path.starts_with('/') || path.contains('\\') || path.chars().any(char::is_control) {
        return Err(refuse(what, path, "is not a relative path inside the repository"));
    }
    if path.split('/').enumerate().any(|(i, part)| {
        part.is_empty() || part == "." || part == ".." || (i == 0 && part.len() >= 2 && part.as_bytes()[1] == b':')
    }) {
        return Err(refuse(what, path, "leaves the repository (empty, `.`, `..` or drive parts)"));
    }
    Ok(())
}

/// A single file or folder name: a [`repo_path`] of one part.
pub fn plain_name(what: &str, name: &str) -> Result<()> {
    repo_path(what, name)?;
    if name.contains('/') {
        return Err(refuse(what, name, "is not a single name"));
    }
    Ok(())
}

/// Exactly `digits` hexadecimal digits (a SHA-256 has 64, a git commit 40).
pub fn hex(what: &str, value: &str, digits: usize) -> Result<()> {
    if value.len() != digits || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse(what, value, &format!("is not {digits} hexadecimal digits")));
    }
    Ok(())
}

/// A Hub repository id, `owner/name` (letters, digits, `-`, `_`, `.`).
pub fn repo_id(id: &str) -> Result<()> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match id.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(()),
        _ => Err(refuse("the repository", id, "is not `owner/name`")),
    }
}

/// `scheme://host[:port]` of an address, lower-cased.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains('@')).then(|| format!("{scheme}://{host}").to_lowercase())
}

/// Whether `path`, built from checked parts, still lies under `root` (a last guard).
pub fn inside(root: &Path, path: &Path) -> Result<()> {
    let escapes = path.components().any(|c| matches!(c, std::path::Component::ParentDir));
    if escapes || !path.starts_with(root) {
        return Err(refuse(
            "the cache path",
            &path.display().to_string(),
            &format!("is not inside {}", root.display()),
        ));
    }
    Ok(())
}

/// A token that can be sent in a header: visible ASCII only. The token itself is never
/// repeated in the error.
pub fn token(token: &str) -> Result<()> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(());
    }
    Err(Error::Unsafe(
        "HF_TOKEN (or the saved Hub token) holds spaces or control characters a token cannot have; \
         set it again without them"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_their_folder_are_refused() {
        for good in ["model.pt", "checkpoints/2000000.pt", "a/b.c/d..e"] {
            repo_path("path", good).unwrap();
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "C:/x", "a\\..\\b", "a\nb", "a/"] {
            assert!(repo_path("path", bad).is_err(), "{bad:?}");
        }
        assert!(plain_name("file", "a/b").is_err());
        hex("oid", &"ab".repeat(32), 64).unwrap();
        assert!(hex("oid", &"zz".repeat(32), 64).is_err());
        assert!(hex("commit", "../../../../tmp", 40).is_err());
        repo_id("hzzheng/MaskDiT").unwrap();
        for bad in ["hzzheng", "../x", "a/b/c", "a/..", "a b/c"] {
            assert!(repo_id(bad).is_err(), "{bad}");
        }
        assert_eq!(origin("https://huggingface.co/api/x?cursor=1"), Some("https://huggingface.co".into()));
        assert_eq!(origin("http://127.0.0.1:8080"), Some("http://127.0.0.1:8080".into()));
        assert_eq!(origin("http://user@evil/x"), None);
        let err = token("hf_abc\nX-Evil: 1").unwrap_err().to_string();
        assert!(!err.contains("hf_abc"), "{err}");
    }
}
