//! Text for people: what the CLI prints of agent-chosen strings (agent ids, models,
//! beneficiaries, file contents) must not drive the terminal. An escape sequence in an
//! `agent_id` could clear the screen or draw fake rows in `audit report`; a bidi
//! override could make a line read differently from its bytes.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: C0 controls (line breaks included), DEL,
/// C1 controls, the bidi embeddings, overrides, isolates and marks, and the Unicode line
/// and paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every unsafe character written as `\uXXXX` (the JSON escape, so the result
/// is still valid inside a JSON string). Borrows when there is nothing to escape.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escape_controls("plain ü ✓"), "plain ü ✓");
        assert_eq!(escape_controls("a\u{1b}[2Jb"), "a\\u001b[2Jb");
        assert_eq!(
            escape_controls("\n\r\t\u{7f}"),
            "\\u000a\\u000d\\u0009\\u007f"
        );
        assert_eq!(escape_controls("\u{85}\u{9b}"), "\\u0085\\u009b");
        assert_eq!(
            escape_controls("\u{202a}\u{202e}\u{2066}\u{2069}"),
            "\\u202a\\u202e\\u2066\\u2069"
        );
        let json = format!("\"{}\"", escape_controls("x\u{202e}y\u{85}"));
        assert_eq!(
            serde_json::from_str::<String>(&json).unwrap(),
            "x\u{202e}y\u{85}"
        );
    }
}
