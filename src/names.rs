//! Names people can trust: usernames, account names and room names all pass
//! one allow-list, and names are compared the way people see them.
//!
//! A name is first NFKC-normalized (Unicode UAX #15: `ｂｏｂ` becomes `bob`, `é`
//! written as `e` + U+0301 becomes one character). Then every character must
//! be visible ASCII (`!` to `~`) or a character Unicode TR39 section 3.1
//! allows in identifiers (Identifier_Status=Allowed: the letters, marks and
//! digits of the scripts in customary modern use), except the joiners U+200C
//! and U+200D. So spaces, control characters, invisible and format
//! characters (U+200B), blank-looking letters (U+3164, U+2800) and bidi
//! overrides (U+202E) are refused, each with the reason.
//!
//! Length is counted in grapheme clusters (UAX #29), what a person sees as
//! one character, with a cap on bytes so a cluster cannot carry a pile of
//! combining marks.
//!
//! Two names are the same name when their keys are equal: the TR39 section 4
//! confusable skeleton of the case-folded name, so `Alice`, `ALICE` and
//! `аlice` (Cyrillic а) are one name, and a look-alike of a name in use is
//! refused as taken.

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::GeneralSecurityProfile as _;
use unicode_segmentation::UnicodeSegmentation as _;

/// Most grapheme clusters in a username or account name.
pub const MAX_USERNAME_GRAPHEMES: usize = 32;
/// Most grapheme clusters in a room name.
pub const MAX_ROOM_GRAPHEMES: usize = 64;
/// Most bytes (UTF-8, after normalization) per allowed grapheme cluster.
const MAX_BYTES_PER_GRAPHEME: usize = 16;

/// What a name names, for its length limit and its error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Username,
    Room,
}

impl NameKind {
    fn what(self) -> &'static str {
        match self {
            NameKind::Username => "a username",
            NameKind::Room => "a room name",
        }
    }

    fn max_graphemes(self) -> usize {
        match self {
            NameKind::Username => MAX_USERNAME_GRAPHEMES,
            NameKind::Room => MAX_ROOM_GRAPHEMES,
        }
    }
}

/// May `c` appear in a name (after NFKC)?
pub fn allowed_char(c: char) -> bool {
    c.is_ascii_graphic() || (!c.is_ascii() && c.identifier_allowed() && c != '\u{200C}' && c != '\u{200D}')
}

/// Why `c` is refused, in words.
fn why_refused(c: char) -> &'static str {
    match c {
        ' ' => "spaces",
        c if c.is_whitespace() => "whitespace",
        c if c.is_control() => "control characters",
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}' => {
            "bidirectional controls"
        }
        '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}' => {
            "invisible characters"
        }
        '\u{3164}' | '\u{115F}' | '\u{1160}' | '\u{FFA0}' | '\u{2800}' | '\u{2000}'..='\u{200A}' => {
            "blank-looking characters"
        }
        _ => "symbols and letters outside the scripts in common use (Unicode TR39)",
    }
}

/// A name checked against the rules, in its normalized (NFKC) form; the
/// error says why it is refused.
pub fn check(kind: NameKind, raw: &str) -> Result<String, String> {
    let what = kind.what();
    let name: String = raw.nfkc().collect();
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if let Some(bad) = name.chars().find(|c| !allowed_char(*c)) {
        return Err(format!(
            "{what} must not contain {} (found U+{:04X}); use letters, digits and ASCII punctuation",
            why_refused(bad),
            u32::from(bad)
        ));
    }
    let max = kind.max_graphemes();
    let graphemes = name.graphemes(true).count();
    if graphemes > max {
        return Err(format!("{what} must be at most {max} characters (got {graphemes})"));
    }
    if name.len() > graphemes * MAX_BYTES_PER_GRAPHEME {
        return Err(format!("{what} stacks too many marks on its characters"));
    }
    Ok(name)
}

/// `check` for a username or an account name.
pub fn username(raw: &str) -> Result<String, String> {
    check(NameKind::Username, raw)
}

/// `check` for a room name.
pub fn room(raw: &str) -> Result<String, String> {
    check(NameKind::Room, raw)
}

/// The form names are compared by: the TR39 confusable skeleton of the
/// case-folded (lowercased) NFKC name. Equal keys: the same name.
pub fn key(name: &str) -> String {
    let folded: String = name.nfkc().collect::<String>().to_lowercase();
    unicode_security::skeleton(&folded).collect::<String>().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_and_are_normalized() {
        for name in ["alice", "élodie_42", "Zoë", "李雷", "Ørjan", "dev-ops.team", "c++", "q&a", "Ñandú"] {
            assert_eq!(username(name).as_deref(), Ok(name), "{name}");
        }
        assert_eq!(username("ｂｏｂ").unwrap(), "bob", "full-width letters fold to ASCII");
        assert_eq!(username("e\u{301}mile").unwrap(), "émile", "a combining accent composes");
    }

    #[test]
    fn invisible_blank_and_bidi_characters_are_refused_with_the_reason() {
        for (name, why) in [
            ("alice\u{200B}", "invisible"),
            ("\u{200B}", "invisible"),
            ("a\u{200D}b", "invisible"),
            ("\u{3164}", "blank-looking"),
            ("\u{2800}", "blank-looking"),
            ("evil\u{202E}txt.exe", "bidirectional"),
            ("a b", "spaces"),
            ("tab\there", "whitespace"),
            ("bell\u{7}", "control"),
            ("", "empty"),
        ] {
            let err = username(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        assert!(username("🎉").unwrap_err().contains("TR39"));
    }

    #[test]
    fn length_counts_what_a_person_sees() {
        assert!(username(&"x".repeat(32)).is_ok());
        assert!(username(&"x".repeat(33)).is_err());
        assert!(username(&"é".repeat(32)).is_ok(), "characters, not bytes");
        // 20 letters, each with a combining mark that has no precomposed form.
        let marked = "q\u{303}".repeat(20);
        assert_eq!(marked.chars().count(), 40);
        assert!(username(&marked).is_ok(), "20 clusters, not 40 code points");
        assert!(room(&"r".repeat(64)).is_ok() && room(&"r".repeat(65)).is_err());
        let zalgo = format!("a{}", "\u{301}\u{302}\u{303}\u{304}".repeat(8));
        assert!(username(&zalgo).unwrap_err().contains("marks"), "one cluster of 33 code points");
    }

    #[test]
    fn look_alikes_share_a_key() {
        assert_eq!(key("Alice"), key("alice"));
        assert_eq!(key("ALICE"), key("alice"));
        assert_eq!(key("\u{430}lice"), key("alice"), "Cyrillic а");
        assert_eq!(key("ｂｏｂ"), key("bob"));
        assert_eq!(key("paypa1"), key("paypal"), "1 and l");
        assert_ne!(key("alice"), key("alicia"));
        assert_ne!(key("bob"), key("rob"));
    }

    #[test]
    fn numbered_rooms_stay_apart() {
        let keys: std::collections::HashSet<String> = (0..10_000).map(|n| key(&format!("room-{n}"))).collect();
        assert_eq!(keys.len(), 10_000, "the harness's room-N names never collide");
    }
}
