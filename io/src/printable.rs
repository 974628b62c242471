//! Text from files, servers and users, made safe to print: control characters (which could
//! move the cursor, clear the screen or forge output lines) are shown as escapes.

use std::borrow::Cow;

/// `text` with every control character written as an escape (`\n`, `\u{1b}`, …); text without
/// any is returned as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

/// `text` with every control character but the line break escaped: for messages whose own
/// lines are meant, such as a chain of errors.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.split('\n').map(|line| printable(line).into_owned()).collect::<Vec<_>>().join("\n"))
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_lines};

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("golden retriever"), "golden retriever");
        assert_eq!(printable("Ünïcödé 犬"), "Ünïcödé 犬");
        assert_eq!(printable("cat\nwrote 0 images\x1b[2J\r"), "cat\\nwrote 0 images\\u{1b}[2J\\r");
        assert!(!printable("\u{7}\u{85}\0").chars().any(char::is_control));
        assert_eq!(printable_lines("a\x1b[2J\nb\r"), "a\\u{1b}[2J\nb\\r");
    }
}
