//! What `a-chat client` shows of the bytes a server sends, when its output is a terminal
//! (ARCHITECTURE §1): whatever a server sends, it never reaches the terminal as a control
//! sequence. C0 controls and DEL are shown in caret notation (`^[`, `^G`, `^?`), C1
//! controls and bidi overrides, embeddings, isolates and marks as `<U+202E>`, invalid
//! UTF-8 as U+FFFD, and a line longer than [`MAX_LINE`] is shown cut with a marker,
//! so the client holds at most that much of it. Piped output does not come here: it
//! is passed through byte for byte.

use std::fmt::Write as _;

/// The longest part of one line the client holds and shows on a terminal.
pub const MAX_LINE: usize = 64 * 1024;

/// Cuts what a server sends into lines, holding at most `max` bytes of one.
#[derive(Debug)]
pub struct LineCutter {
    /// The start of the current line, at most `max` bytes.
    held: Vec<u8>,
    /// Bytes of the current line dropped past `max`: shown as a count in the marker.
    dropped: u64,
    /// The most bytes of one line that are held and shown.
    max: usize,
}

impl LineCutter {
    pub fn new(max: usize) -> LineCutter {
        LineCutter {
            held: Vec::new(),
            dropped: 0,
            max,
        }
    }

    /// Takes what one read returned and appends the rendering of every line it completed
    /// to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut String) {
        while let Some(nl) = memchr::memchr(b'\n', data) {
            self.hold(&data[..nl]);
            self.show(out);
            data = &data[nl + 1..];
        }
        self.hold(data);
    }

    /// At the end of the stream: the rendering of the last line, if it had no `\n`.
    pub fn finish(&mut self, out: &mut String) {
        if !self.held.is_empty() || self.dropped > 0 {
            self.show(out);
        }
    }

    fn hold(&mut self, part: &[u8]) {
        let room = self.max - self.held.len();
        let kept = part.len().min(room);
        self.held.extend_from_slice(&part[..kept]);
        self.dropped += (part.len() - kept) as u64;
    }

    fn show(&mut self, out: &mut String) {
        let mut line = &self.held[..];
        if self.dropped == 0 {
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
        }
        render(line, out);
        if self.dropped > 0 {
            let _ = write!(out, " [line cut: {} more bytes not shown]", self.dropped);
        }
        out.push('\n');
        self.held.clear();
        self.dropped = 0;
        if self.held.capacity() > 4096 {
            self.held = Vec::new();
        }
    }
}

/// Appends `line` to `out` as a terminal may safely show it (see the module header).
pub fn render(line: &[u8], out: &mut String) {
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push('\t'),
                '\0'..='\x1f' => {
                    out.push('^');
                    out.push(char::from(c as u8 + 0x40));
                }
                '\x7f' => out.push_str("^?"),
                '\u{80}'..='\u{9f}'
                | '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => {
                    let _ = write!(out, "<U+{:04X}>", c as u32);
                }
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &[u8]) -> String {
        let mut out = String::new();
        render(line, &mut out);
        out
    }

    #[test]
    fn controls_are_shown_in_caret_notation() {
        assert_eq!(
            shown(b"\x1b]0;pwned\x07 \x1b[31mred\x1b[0m \x08\x08\x00\x7f"),
            "^[]0;pwned^G ^[[31mred^[[0m ^H^H^@^?"
        );
        assert_eq!(shown(b"a\tb"), "a\tb", "TAB is text");
        assert_eq!(shown(b"a\rb"), "a^Mb");
    }

    #[test]
    fn c1_and_bidi_controls_are_shown_as_code_points() {
        assert_eq!(shown("\u{9b}2J \u{85}".as_bytes()), "<U+009B>2J <U+0085>");
        assert_eq!(
            shown("\u{202e}evil\u{202c} \u{2067}x\u{2069} \u{200f}".as_bytes()),
            "<U+202E>evil<U+202C> <U+2067>x<U+2069> <U+200F>"
        );
        assert_eq!(shown("élodie שלום 😀".as_bytes()), "élodie שלום 😀");
    }

    #[test]
    fn invalid_utf8_is_shown_as_replacement_characters() {
        assert_eq!(shown(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn lines_are_cut_across_reads() {
        let mut cutter = LineCutter::new(8);
        let mut out = String::new();
        cutter.push(b"from a: h", &mut out);
        assert_eq!(out, "");
        cutter.push(b"i\r\nb: \x1b\nlast", &mut out);
        assert_eq!(out, "from a:  [line cut: 3 more bytes not shown]\nb: ^[\n");
        out.clear();
        cutter.push(b"", &mut out);
        cutter.finish(&mut out);
        assert_eq!(out, "last\n");
        out.clear();
        cutter.finish(&mut out);
        assert_eq!(out, "", "nothing held, nothing shown");
    }

    #[test]
    fn a_long_line_costs_at_most_max_bytes() {
        let mut cutter = LineCutter::new(MAX_LINE);
        let mut out = String::new();
        for _ in 0..64 {
            cutter.push(&[b'x'; 64 * 1024], &mut out);
            assert!(cutter.held.len() <= MAX_LINE);
        }
        cutter.push(b"\n", &mut out);
        assert_eq!(
            out.len(),
            MAX_LINE + " [line cut: 4128768 more bytes not shown]\n".len()
        );
    }
}
