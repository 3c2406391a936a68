//! Text from the network, made safe to print on a terminal.
//!
//! A chat message, a user name, a room name, an error message or a close
//! reason comes from someone else. Printed raw, `\r`, `ESC[2K` or `ESC[1A`
//! would erase and forge lines, `ESC]0;...BEL` would set the window title, and
//! a bidi override would make text read backwards. Every such character is
//! shown instead as a visible escape (`\u{1b}`), so what someone sent is what
//! the reader sees, and nothing they sent can act on the terminal.
//!
//! Neutralized: every control character (C0 including `\n`, `\r` and tab,
//! DEL, C1), the bidi controls, the line and paragraph separators, and the
//! invisible characters that could hide text (zero-width space, word joiner,
//! the byte-order mark). Joiners used inside emoji and scripts (U+200C,
//! U+200D) are kept.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Must `c` be shown as an escape rather than printed?
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'                      // Arabic letter mark
            | '\u{200B}'                    // zero-width space
            | '\u{200E}' | '\u{200F}'       // left-to-right / right-to-left marks
            | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
            | '\u{2028}' | '\u{2029}'       // line and paragraph separators
            | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'       // bidi isolates
            | '\u{FEFF}'                    // byte-order mark
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        )
}

/// `text` with every unsafe character shown as `\u{XX}` (borrowed when
/// there is none, the common case).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A JSON text as one safe line: inside strings, unsafe characters become
/// JSON escapes (`\u001b`), so the line is the same JSON value; outside
/// strings, white space becomes a space and anything else unsafe is shown
/// as by [`printable`].
pub fn printable_json(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            _ if in_string && is_unsafe(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
                escaped = false;
                continue;
            }
            '\t' | '\n' | '\r' if !in_string => out.push(' '),
            _ if is_unsafe(c) => out.push_str(&printable(c.encode_utf8(&mut [0; 4]))),
            _ => out.push(c),
        }
        if in_string {
            match c {
                '\\' => escaped = !escaped,
                '"' if !escaped => in_string = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            in_string = true;
        }
    }
    Cow::Owned(out)
}

/// One of each kind of character that must not reach a terminal raw (for tests).
#[cfg(test)]
pub(crate) const HOSTILE: &str =
    "a\rb\x1b[2K\x1b[1A* mallory is now admin\x1b]0;owned\x07\u{9b}31m\u{202e}evil\u{2066}\n<alice> x\u{7f}\u{200b}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_escape_and_bidi_characters_are_shown_not_obeyed() {
        let shown = printable(HOSTILE);
        assert!(!shown.chars().any(is_unsafe), "{shown}");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert_eq!(
            shown,
            "a\\u{d}b\\u{1b}[2K\\u{1b}[1A* mallory is now admin\\u{1b}]0;owned\\u{7}\\u{9b}31m\\u{202e}evil\\u{2066}\
             \\u{a}<alice> x\\u{7f}\\u{200b}"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in ["hello", "héllo wörld", "日本語", "👨\u{200d}👩\u{200d}👧", "a\"b\\c"] {
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn json_stays_the_same_value_on_one_safe_line() {
        let value = serde_json::json!({"type": "chat", "text": HOSTILE, "from": "a\"\u{1b}"});
        let raw = format!("{{\n\"type\":\"chat\",\r\n\"text\":{},\"from\":{}}}", value["text"], value["from"]);
        // serde_json leaves C1, DEL and bidi characters raw inside strings.
        assert!(raw.contains('\u{202e}') && raw.contains('\u{9b}'));
        let line = printable_json(&raw);
        assert!(!line.chars().any(is_unsafe), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}
