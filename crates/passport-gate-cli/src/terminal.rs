//! Text for people: what the CLI prints of agent-chosen strings (agent ids, models,
//! beneficiaries, file contents) must not drive the terminal. An escape sequence in an
//! `agent_id` could clear the screen or draw fake rows in `audit report`; a bidi
//! override could make a line read differently from its bytes.

/// The one escape for agent-chosen text, shared with the layer's audit file.
pub use passport_core::inspect::escape_controls;

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
