//! Incremental UTF-8 validation: text that arrives in pieces (frames, and
//! reads within a frame) is checked as each piece arrives, so invalid text is
//! refused at the first bad byte instead of once the message is complete.
//!
//! Only the at most 3 bytes of a character cut by a piece boundary are kept
//! between pieces; everything else is checked in place by `std::str::from_utf8`,
//! which also refuses an impossible prefix (`F4 90`, an overlong `E0 80`)
//! without waiting for the rest of the character.

/// The validator's state between pieces.
#[derive(Debug, Clone, Default)]
pub struct Utf8Stream {
    /// The start of a character cut by the last piece boundary.
    pending: [u8; 4],
    pending_len: usize,
}

/// The length of a character from its first byte (0: not a first byte).
fn char_width(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Can `bytes` still become valid UTF-8 if more bytes follow?
fn valid_prefix(bytes: &[u8]) -> Result<&[u8], ()> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(&[]),
        Err(err) if err.error_len().is_none() => Ok(&bytes[err.valid_up_to()..]),
        Err(_) => Err(()),
    }
}

impl Utf8Stream {
    /// Check the next piece; `false` once the text cannot be valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> bool {
        if self.pending_len > 0 {
            let width = char_width(self.pending[0]);
            let take = (width - self.pending_len).min(piece.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&piece[..take]);
            self.pending_len += take;
            piece = &piece[take..];
            let Ok(rest) = valid_prefix(&self.pending[..self.pending_len]) else { return false };
            if !rest.is_empty() {
                // Still cut: only possible when the piece ran out.
                return true;
            }
            self.pending_len = 0;
        }
        match valid_prefix(piece) {
            Ok(cut) => {
                self.pending[..cut.len()].copy_from_slice(cut);
                self.pending_len = cut.len();
                true
            }
            Err(()) => false,
        }
    }

    /// The text ended: valid only if no character was left cut.
    pub fn finish(&mut self) -> bool {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_in_pieces(bytes: &[u8], piece: usize) -> bool {
        let mut stream = Utf8Stream::default();
        bytes.chunks(piece.max(1)).all(|p| stream.feed(p)) && stream.finish()
    }

    #[test]
    fn valid_text_passes_however_it_is_cut() {
        let text = "κόσμε: ascii, é, 中文, 𝄞 and emoji 🎉".as_bytes();
        for piece in 1..=text.len() {
            assert!(valid_in_pieces(text, piece), "pieces of {piece}");
        }
        assert!(valid_in_pieces(b"", 1));
    }

    #[test]
    fn invalid_text_fails_at_the_first_bad_byte() {
        // Autobahn 6.4.1: valid text, then a code point above U+10FFFF.
        let mut stream = Utf8Stream::default();
        assert!(stream.feed(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5]));
        assert!(!stream.feed(&[0xf4, 0x90]), "F4 90 can never be valid: no need to wait");
        let mut stream = Utf8Stream::default();
        assert!(stream.feed(&[0xf4]));
        assert!(!stream.feed(&[0x90, 0x80, 0x80]));
        for bad in [&[0xff][..], &[0xc0, 0xaf], &[0xed, 0xa0, 0x80], &[0x80]] {
            assert!(!valid_in_pieces(bad, 1), "{bad:x?}");
        }
    }

    #[test]
    fn a_cut_character_at_the_end_is_invalid() {
        let mut stream = Utf8Stream::default();
        assert!(stream.feed(&[b'a', 0xe2, 0x82]));
        assert!(!stream.finish());
        assert!(stream.feed(b"fresh"), "finish starts over");
        assert!(stream.finish());
    }
}
