//! The wire protocol (ARCHITECTURE §1) as pure functions: cutting a byte stream into lines,
//! parsing `name1, name2: text` (and refusing terminal control in the text), and
//! formatting the lines the server sends. Logins are checked in `names`. Nothing here does I/O, so all of it is unit-tested and fuzzed directly.

use std::fmt;

/// Why a byte stream could not be cut into lines. Both close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A line grew past `max_line_bytes` before its `\n` arrived.
    LineTooLong,
    /// A complete line is not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::LineTooLong => "line too long",
            FrameError::InvalidUtf8 => "invalid utf-8",
        })
    }
}

/// Cuts the bytes a client sends into lines, holding at most one partial line.
///
/// The reader appends whatever a `read` returned with [`LineFramer::push`], then takes
/// every complete line with [`LineFramer::next_line`]. A line's length is checked as its
/// bytes arrive, so a client that never sends `\n` costs at most `max_line_bytes` plus one
/// read of memory.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes received and not yet handed out: complete lines, then at most one partial line.
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out as part of a line.
    start: usize,
    /// Everything in `buf[start..scanned]` is known to hold no `\n`.
    scanned: usize,
    /// Longest line accepted, without its `\n` or `\r\n`.
    max_line: usize,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes (without the line ending).
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
        }
    }

    /// Appends what a `read` returned.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Moves the partial line (at most `max_line` bytes) to the front.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    /// The next complete line, without its `\n` or `\r\n`; `None` when only a partial
    /// line (or nothing) is left. An error means the connection must be closed.
    pub fn next_line(&mut self) -> Option<Result<&str, FrameError>> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(i) => {
                let nl = self.scanned + i;
                let line_start = self.start;
                self.start = nl + 1;
                self.scanned = nl + 1;
                let mut line = &self.buf[line_start..nl];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                if line.len() > self.max_line {
                    return Some(Err(FrameError::LineTooLong));
                }
                Some(std::str::from_utf8(line).map_err(|_| FrameError::InvalidUtf8))
            }
            None => {
                self.scanned = self.buf.len();
                let partial = &self.buf[self.start..];
                // A partial line may hold `max_line` bytes plus the `\r` of a `\r\n`.
                let too_long = partial.len() > self.max_line + 1
                    || (partial.len() == self.max_line + 1 && partial.last() != Some(&b'\r'));
                if too_long {
                    Some(Err(FrameError::LineTooLong))
                } else {
                    None
                }
            }
        }
    }

    /// Every byte held, from the front of the buffer: before any line was handed out,
    /// the first bytes the client sent (to tell a TLS handshake from a login).
    pub fn front(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes held for a line whose `\n` has not arrived yet.
    pub fn partial_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Gives back the buffer's memory when nothing is pending, so a connection waiting
    /// for input holds no buffer, and one waiting for the rest of a line holds little more
    /// than that line.
    pub fn shrink_if_idle(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
        } else if self.buf.capacity() > 4 * self.partial_len() + 1024 {
            self.compact();
            self.buf.shrink_to_fit();
        }
    }
}

/// Why a line after the login is not a message. The connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// No `:` in the line.
    NoColon,
    /// Nothing but commas and spaces before the `:`.
    NoRecipients,
    /// More names than `max_recipients`.
    TooManyRecipients,
    /// The text holds a C0 control other than TAB, DEL, or a C1 control: it could drive
    /// the reader's terminal (colours, title, erasing what was shown).
    ControlCharacter,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::NoColon => "not a message: write \"name1, name2: text\"",
            MessageError::NoRecipients => "no recipients: write \"name1, name2: text\"",
            MessageError::TooManyRecipients => "too many recipients",
            MessageError::ControlCharacter => "control characters are not allowed",
        })
    }
}

/// A parsed message line: the recipients part (validated) and the trimmed text.
/// Parsing allocates nothing; [`Message::recipients`] walks the names when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Everything before the first `:`, holding at least one name.
    dest: &'a str,
    pub text: &'a str,
}

impl<'a> Message<'a> {
    /// The recipients as written, before the `:`: two messages with the same `dest` have
    /// the same recipients.
    pub fn dest(&self) -> &'a str {
        self.dest
    }

    /// The distinct recipients, trimmed, in the order first named. The first few distinct
    /// names are remembered in a small array and compared directly; past those, through a
    /// set, so a message naming the largest allowed number of recipients stays cheap.
    pub fn recipients(&self) -> Recipients<'a> {
        Recipients {
            names: names(self.dest),
            few: [""; FEW],
            known: 0,
            many: None,
        }
    }
}

/// How many distinct names [`Recipients`] compares directly before it uses a set.
const FEW: usize = 16;

/// The distinct recipients of a [`Message`], in the order first named.
pub struct Recipients<'a> {
    names: Names<'a>,
    /// The first `known` distinct names (all of them, up to `FEW`).
    few: [&'a str; FEW],
    known: usize,
    /// Every distinct name so far, once there are more than `FEW`.
    many: Option<std::collections::HashSet<&'a str>>,
}

impl<'a> Iterator for Recipients<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let name = self.names.next()?;
            if let Some(many) = &mut self.many {
                if many.insert(name) {
                    return Some(name);
                }
            } else if !self.few[..self.known].contains(&name) {
                if self.known < FEW {
                    self.few[self.known] = name;
                    self.known += 1;
                } else {
                    let mut many: std::collections::HashSet<&'a str> =
                        self.few.iter().copied().collect();
                    many.insert(name);
                    self.many = Some(many);
                }
                return Some(name);
            }
        }
    }
}

/// The non-empty, trimmed names of a recipients part, in order.
struct Names<'a> {
    /// What is left to split: `None` once the last name was handed out.
    rest: Option<&'a str>,
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let rest = self.rest?;
            let name = match memchr::memchr(b',', rest.as_bytes()) {
                Some(comma) => {
                    self.rest = Some(&rest[comma + 1..]);
                    &rest[..comma]
                }
                None => {
                    self.rest = None;
                    rest
                }
            };
            let name = trim(name);
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
}

fn names(dest: &str) -> Names<'_> {
    Names { rest: Some(dest) }
}

/// `str::trim`, with a shortcut for the usual case of a name that starts and ends with a
/// printable ASCII character (every ASCII whitespace character is at most `' '`).
fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if (b'!'..0x80).contains(first) && (b'!'..0x80).contains(last) => s,
        [only] if (b'!'..0x80).contains(only) => s,
        _ => s.trim(),
    }
}

/// Parses `name1, name2, ... nameN: text`. Names and text are trimmed; empty names
/// (as in `a,,b`) are skipped; a name listed twice counts once for delivery but each
/// listing counts toward `max_recipients`, so a line full of repeats is refused cheaply.
pub fn parse_message(line: &str, max_recipients: usize) -> Result<Message<'_>, MessageError> {
    // A byte search (the `:` is ASCII, so it never falls inside a character).
    let colon = memchr::memchr(b':', line.as_bytes()).ok_or(MessageError::NoColon)?;
    let (dest, text) = (&line[..colon], &line[colon + 1..]);
    let listed = names(dest).take(max_recipients + 1).count();
    if listed == 0 {
        return Err(MessageError::NoRecipients);
    }
    if listed > max_recipients {
        return Err(MessageError::TooManyRecipients);
    }
    // The usual `name: text` has one space after the colon; past it, `trim`'s shortcut.
    let text = trim(text.strip_prefix(' ').unwrap_or(text));
    if has_control(text) {
        return Err(MessageError::ControlCharacter);
    }
    Ok(Message { dest, text })
}

/// Parses a line that follows a message whose recipients were written as `dest` (the
/// `dest` of a message [`parse_message`] accepted): if this line names them the same way,
/// it is that message's sibling, and its recipients need not be split and counted again.
/// `None` when the line names anyone otherwise; else what `parse_message` would say.
pub fn parse_after<'a>(line: &'a str, dest: &str) -> Option<Result<Message<'a>, MessageError>> {
    // `dest` holds no `:` (it was all before a first one), so the `:` after it is the
    // line's first too.
    let text = line.strip_prefix(dest)?.strip_prefix(':')?;
    let text = trim(text.strip_prefix(' ').unwrap_or(text));
    if has_control(text) {
        return Some(Err(MessageError::ControlCharacter));
    }
    Some(Ok(Message {
        dest: &line[..dest.len()],
        text,
    }))
}

/// Whether `text` holds a C0 control other than TAB, DEL, or a C1 control (U+0080 to
/// U+009F, which UTF-8 writes as 0xC2 0x80..=0x9F). It runs on every message: a pass of
/// 16-byte blocks without branches (the last one overlapping the one before, so that no
/// byte is looked at one by one) flags any byte that may start one (0xC2 is also the lead
/// byte of ordinary characters such as `«` and `°`), and only a flagged block is looked
/// at closely. A block may start inside a character: 0xC2 is never a continuation byte.
pub fn has_control(text: &str) -> bool {
    fn suspect(b: u8) -> u8 {
        (((b < 0x20) & (b != b'\t')) | (b == 0x7f) | (b == 0xc2)) as u8
    }
    fn any_suspect(bytes: &[u8]) -> bool {
        bytes.iter().fold(0, |any, &b| any | suspect(b)) != 0
    }
    let bytes = text.as_bytes();
    let n = bytes.len();
    if n < 16 {
        return any_suspect(bytes) && control_from(bytes);
    }
    let mut at = 0;
    while at + 16 <= n {
        if any_suspect(&bytes[at..at + 16]) {
            return control_from(&bytes[at..]);
        }
        at += 16;
    }
    at < n && any_suspect(&bytes[n - 16..]) && control_from(&bytes[n - 16..])
}

/// The close look of [`has_control`], from a flagged block to the end.
fn control_from(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b < 0x20 && b != b'\t')
            || b == 0x7f
            || (b == 0xc2 && matches!(bytes.get(i + 1), Some(0x80..=0x9f)))
    })
}

/// Appends the line each recipient gets, `from <sender>: <text>\n`, to `out`.
pub fn write_delivery(out: &mut Vec<u8>, sender: &str, text: &str) {
    out.reserve(sender.len() + text.len() + 8);
    out.extend_from_slice(b"from ");
    out.extend_from_slice(sender.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// The line each recipient gets: `from <sender>: <text>\n`.
pub fn format_delivery(sender: &str, text: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(sender.len() + text.len() + 8);
    write_delivery(&mut line, sender, text);
    line
}

/// A line the server originates: `error: <what>\n`.
pub fn format_error(what: impl fmt::Display) -> Vec<u8> {
    format!("error: {what}\n").into_bytes()
}

/// A line the server originates: `notice: <what>\n`.
pub fn format_notice(what: impl fmt::Display) -> Vec<u8> {
    format!("notice: {what}\n").into_bytes()
}

/// `error: no such user "<name>"`, the answer to a message naming an unknown login.
/// The `error:` answers after which the connection stays open: answers to one message
/// line (ARCHITECTURE §1). Every other `error:` line is followed by the server's close.
const ERRORS_THAT_KEEP_THE_CONNECTION: [&str; 6] = [
    "error: not a message",
    "error: no recipients",
    "error: too many recipients",
    "error: no such user",
    "error: control characters are not allowed",
    "error: could not deliver",
];

/// Whether the server closes the connection after sending `line` (an `error:` line that
/// does not answer a single message: a refused login, a line too long, a timeout...).
pub fn error_closes_connection(line: &str) -> bool {
    line.starts_with("error: ")
        && !ERRORS_THAT_KEEP_THE_CONNECTION
            .iter()
            .any(|prefix| line.starts_with(prefix))
}

pub fn no_such_user(name: &str) -> Vec<u8> {
    format_error(format_args!("no such user \"{name}\""))
}

/// The answer when a recipient on another cluster node cannot be reached (ARCHITECTURE §10).
pub fn could_not_deliver(name: &str) -> Vec<u8> {
    format_error(format_args!("could not deliver to \"{name}\""))
}

/// The text of the notice a client closed by an operator reads last.
pub fn kick_notice(reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("disconnected by the operator: {reason}"),
        None => "disconnected by the operator".into(),
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
