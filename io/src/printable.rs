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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("golden retriever"), "golden retriever");
        assert_eq!(printable("Ünïcödé 犬"), "Ünïcödé 犬");
        assert_eq!(printable("cat\nwrote 0 images\x1b[2J\r"), "cat\\nwrote 0 images\\u{1b}[2J\\r");
        assert!(!printable("\u{7}\u{85}\0").chars().any(char::is_control));
    }
}
