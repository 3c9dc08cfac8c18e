//! The fast path of step 2's `model` extraction: one pass over the body that validates
//! the JSON and finds the top-level `"model"` without building any value.
//!
//! It answers only when it is sure: it accepts a strict subset of what the `serde_json`
//! path ([`super::requested_model`]) accepts, and gives the same model for it. Anything
//! else (an error, an escaped key or model, a non-ASCII key, a duplicate `model`,
//! nesting deeper than [`MAX_FAST_DEPTH`]) returns `None` and the `serde_json` path
//! decides, so every refusal and its code stays the one of that path. What makes it
//! faster is skipping the plain runs of strings (most of a chat body) a block at a time
//! with a loop the compiler vectorizes.

/// Nesting the fast path follows (arrays and objects); deeper bodies take the slow path,
/// which enforces [`super::MAX_BODY_DEPTH`].
pub(super) const MAX_FAST_DEPTH: usize = 64;

/// The top-level `"model"` of `body` when the body is a JSON object the `serde_json`
/// path certainly accepts with this model; `None` when unsure.
pub(super) fn fast_model(body: &[u8]) -> Option<&str> {
    let mut s = Scan { b: body, i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    let mut model = None;
    if s.peek() == Some(b'}') {
        return None;
    }
    loop {
        let (key, escaped) = s.string()?;
        if escaped {
            return None;
        }
        // The slow path reads top-level keys as strings, which must be UTF-8.
        let key = std::str::from_utf8(key).ok()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        if key == "model" {
            if model.is_some() || s.peek() != Some(b'"') {
                return None;
            }
            let (value, escaped) = s.string()?;
            if escaped || value.is_empty() {
                return None;
            }
            model = Some(std::str::from_utf8(value).ok()?);
        } else {
            s.value(1)?;
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != body.len() {
        return None;
    }
    model
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string at the cursor: its raw bytes between the quotes, and whether it holds
    /// an escape. Escapes are checked as `serde_json` checks a string it skips.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i += plain_run(&self.b[self.i..]);
            match self.next()? {
                b'"' => return Some((&self.b[start..self.i - 1], escaped)),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.next()?.is_ascii_hexdigit() {
                                    return None;
                                }
                            }
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        // A digit right after a leading zero is refused by serde_json.
        (!matches!(self.peek(), Some(b'0'..=b'9'))).then_some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// Any JSON value at the cursor, nested at most [`MAX_FAST_DEPTH`] deep.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' if depth >= MAX_FAST_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }
}

/// How many bytes at the start of `s` need no attention inside a string: anything but
/// `"`, `\` and control characters. [`BLOCK`] bytes at a time, without branches inside
/// a block, so the compiler vectorizes the test.
const BLOCK: usize = 64;

fn plain_run(s: &[u8]) -> usize {
    let special = |b: u8| (b == b'"') | (b == b'\\') | (b < 0x20);
    let mut done = 0;
    for block in s.chunks_exact(BLOCK) {
        if block.iter().fold(0u8, |any, &b| any | u8::from(special(b))) != 0 {
            break;
        }
        done += BLOCK;
    }
    done + s[done..]
        .iter()
        .position(|&b| special(b))
        .unwrap_or(s.len() - done)
}

#[cfg(test)]
mod tests {
    use super::super::requested_model;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_plain_chat_body_takes_the_fast_path() {
        let body = br#" {"model" : "qwen/qwen3-32b", "messages":[{"role":"user","content":"hi \"there\" \u00e9"}], "n": -1.5e3, "stream": true, "x": null, "y": [], "z": {}} "#;
        assert_eq!(fast_model(body), Some("qwen/qwen3-32b"));
    }

    #[test]
    fn what_the_fast_path_is_unsure_of_goes_to_the_slow_path() {
        for body in [
            &br#"{"model":"a","model":"b"}"#[..],
            br#"{"mod\u0065l":"a"}"#,
            br#"{"model":"\u0061"}"#,
            br#"{"model":""}"#,
            br#"{"model":1}"#,
            br#"{"model":"a","n":01}"#,
            br#"{"model":"a",}"#,
            br#"{"model":"a"} x"#,
            b"{\"model\":\"a\",\"c\":\"\x01\"}",
            b"{\"model\":\"\xff\"}",
            b"{\"\xff\":1,\"model\":\"a\"}",
            br#"[{"model":"a"}]"#,
            br#"{}"#,
        ] {
            assert_eq!(fast_model(body), None, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!(
            r#"{{"model":"a","x":{}{}}}"#,
            "[".repeat(MAX_FAST_DEPTH),
            "]".repeat(MAX_FAST_DEPTH)
        );
        assert_eq!(fast_model(deep.as_bytes()), None);
    }

    #[test]
    fn plain_runs_stop_at_quotes_backslashes_and_control_characters() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in [0, 1, 15, 16, 17, 63, 64, 65, 100] {
                let mut s = vec![b'a'; 150];
                s[at] = special;
                assert_eq!(plain_run(&s), at);
            }
        }
        assert_eq!(plain_run(&[0x7f, 0xff, b'a']), 3);
    }

    fn token() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(vec![
            &b"{"[..],
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b" ",
            b"\"model\"",
            b"\"m\"",
            b"\"x\"",
            b"\"\"",
            b"\"a\\u00e9\\n\"",
            b"\"\\ud800\"",
            b"\"\\q\"",
            b"\"\x01\"",
            b"\"\xc3\xa9\"",
            b"\"\xff\"",
            b"0",
            b"01",
            b"-1.5e+3",
            b"1.",
            b"-",
            b"true",
            b"nul",
            b"null",
        ])
        .prop_map(<[u8]>::to_vec)
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_fast_path_finds_the_model_of_any_serialized_object(
            members in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..6),
            model in "[a-zA-Z0-9/._-]{1,24}",
        ) {
            let mut object: serde_json::Map<String, serde_json::Value> =
                members.into_iter().collect();
            object.insert("model".into(), model.clone().into());
            let body = serde_json::to_vec(&object).unwrap();
            prop_assert_eq!(fast_model(&body), Some(model.as_str()));
            prop_assert_eq!(requested_model(&body), Ok(model));
        }

        #[test]
        fn the_fast_path_agrees_with_serde_json_whenever_it_answers(
            tokens in prop::collection::vec(token(), 0..24),
            wrap in any::<bool>(),
        ) {
            let mut body = tokens.concat();
            if wrap {
                body = [&b"{\"model\":\"m\","[..], &body, b"}"].concat();
            }
            if let Some(model) = fast_model(&body) {
                prop_assert_eq!(requested_model(&body), Ok(model.to_owned()));
            }
        }
    }
}
