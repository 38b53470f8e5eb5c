//! Property-based fuzzing of the pure protocol code (ARCHITECTURE §1): the line framer, login
//! validation and canonical forms, message parsing and delivery formatting, on generated
//! inputs. Each
//! property runs CASES inputs (set PROPTEST_CASES to run more).

use a_chat::names::{canonical, same_look, validate_login, LoginCharset};
use a_chat::protocol::*;
use proptest::prelude::*;

const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        // The tests are deterministic functions of their input: no regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

type Lines = Vec<Result<String, FrameError>>;

/// What the framer must produce for `data`, written the obvious way: every `\n`-ended
/// line (one trailing `\r` stripped) checked for length, then UTF-8; then the partial
/// line left at the end, which may already be too long. Stops at the first error, as the
/// connection does.
fn reference(data: &[u8], max_line: usize) -> Lines {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..nl];
        rest = &rest[nl + 1..];
        if let [body @ .., b'\r'] = line {
            line = body;
        }
        if line.len() > max_line {
            out.push(Err(FrameError::LineTooLong));
            return out;
        }
        match std::str::from_utf8(line) {
            Ok(s) => out.push(Ok(s.to_owned())),
            Err(_) => {
                out.push(Err(FrameError::InvalidUtf8));
                return out;
            }
        }
    }
    let too_long =
        rest.len() > max_line + 1 || (rest.len() == max_line + 1 && rest.last() != Some(&b'\r'));
    if too_long {
        out.push(Err(FrameError::LineTooLong));
    }
    out
}

/// Takes every line the framer has; true once it reported an error.
fn drain(framer: &mut LineFramer, max_line: usize, out: &mut Lines) -> bool {
    loop {
        match framer.next_line() {
            None => {
                assert!(
                    framer.partial_len() <= max_line + 1,
                    "holding {} bytes of partial line, max_line {max_line}",
                    framer.partial_len()
                );
                return false;
            }
            Some(Ok(line)) => out.push(Ok(line.to_owned())),
            Some(Err(e)) => {
                out.push(Err(e));
                return true;
            }
        }
    }
}

/// Bytes rich in line ends, `\r`, separators, ASCII and broken UTF-8 (any byte is
/// mapped through a table: cheaper to generate than a union of strategies).
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400).prop_map(|raw| {
        raw.into_iter()
            .map(|b| match b {
                0..=39 => b'\n',
                40..=54 => b'\r',
                55..=64 => b':',
                65..=74 => b',',
                75..=84 => b' ',
                85..=189 => b'a' + b % 26,
                other => other, // 0xbe..=0xff: broken UTF-8, now and then a valid pair
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    /// Bytes split at arbitrary points, as reads may return them, give
    /// exactly the lines and the error of the same bytes fed whole, which are those of the
    /// reference, with the framer giving memory back between reads as the reader has it
    /// do; the framer never panics and never holds more than max_line + 1 bytes of a
    /// partial line once it has said that no complete line is left.
    #[test]
    fn framing_does_not_depend_on_how_the_bytes_arrive(
        data in wire_bytes(),
        max_line in 1usize..48,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let want = reference(&data, max_line);

        let mut whole = LineFramer::new(max_line);
        let mut got_whole = Vec::new();
        whole.push(&data);
        drain(&mut whole, max_line, &mut got_whole);
        prop_assert_eq!(&got_whole, &want);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.push(0);
        points.push(data.len());
        points.sort_unstable();
        let mut framer = LineFramer::new(max_line);
        let mut got = Vec::new();
        for w in points.windows(2) {
            framer.push(&data[w[0]..w[1]]);
            if drain(&mut framer, max_line, &mut got) {
                break;
            }
            // As the reader does after routing each read.
            framer.shrink_if_idle();
        }
        prop_assert_eq!(&got, &want);
    }

    /// Any string passes a-chat's own part of the login rule exactly when it is 1..=max
    /// bytes without whitespace, `:`, `,` or control characters, and the ASCII charset
    /// exactly when it is made of ASCII letters, digits, `_`, `-` and `.` (which PRECIS
    /// always allows); neither panics, and a refusal is never empty.
    #[test]
    fn login_validation_matches_its_rule(
        login in prop_oneof![".{0,20}", "[a-zA-Z0-9_.\\-]{0,20}", "[a-c\u{430}\u{200b}\u{202e} :,.]{0,8}"],
        max in 1usize..40,
    ) {
        let plain = !login.is_empty()
            && login.len() <= max
            && !login
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == ',');
        let ascii_ok = plain
            && login.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        let unicode = validate_login(&login, max, LoginCharset::Unicode);
        if !plain {
            prop_assert!(unicode.is_err(), "{:?}", login);
        }
        if let Err(e) = &unicode {
            prop_assert!(!e.to_string().is_empty());
        }
        prop_assert_eq!(
            validate_login(&login, max, LoginCharset::Ascii).is_ok(),
            ascii_ok,
            "{:?}",
            login
        );
        if ascii_ok {
            prop_assert_eq!(unicode, Ok(login.as_str()));
        }
        // No format (invisible, bidi) character ever makes a login.
        if login.contains(['\u{200b}', '\u{202e}']) {
            prop_assert!(validate_login(&login, max, LoginCharset::Unicode).is_err());
        }
    }

    /// The canonical form never panics on any string, is its own canonical form, and
    /// makes the same person of a name and its other cases.
    #[test]
    fn the_canonical_form_is_stable(
        name in prop_oneof![any::<String>(), ".{0,12}", "[a-zA-Z0-9lI1O0]{1,12}"],
    ) {
        let c = canonical(&name);
        prop_assert_eq!(canonical(&c), c.clone(), "{:?}", name);
        // Case is no part of the look (for letters and digits: a combining mark after
        // a letter that case mapping splits in two may change places, as Unicode's own
        // canonical caseless match has it).
        if name.chars().all(char::is_alphanumeric) {
            prop_assert_eq!(
                canonical(&name.to_uppercase()),
                canonical(&name.to_lowercase()),
                "{:?}",
                name
            );
        }
        if name.is_ascii() {
            prop_assert!(same_look(&name, &name.to_ascii_lowercase()));
        }
    }

    /// Skeleton collisions are symmetric, and agree with the canonical forms.
    #[test]
    fn look_alike_collisions_are_symmetric(
        a in "[a-cAClI1O0\u{430}\u{441}\u{3bf}]{1,4}",
        b in "[a-cAClI1O0\u{430}\u{441}\u{3bf}]{1,4}",
    ) {
        prop_assert_eq!(same_look(&a, &b), same_look(&b, &a));
        prop_assert_eq!(same_look(&a, &b), canonical(&a) == canonical(&b));
    }

    /// A message from a valid login to valid recipients (repeats, odd spacing and
    /// separators included), framed and parsed, is delivered to each distinct recipient
    /// once as exactly `from <login>: <trimmed text>\n`.
    #[test]
    fn a_valid_message_round_trips(
        sender in login_strategy(),
        // Up to 24 distinct names among up to 40: past 16 distinct names the parser
        // remembers them differently.
        pool in prop::collection::vec(login_strategy(), 1..24),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..40),
        seps in prop::collection::vec(
            prop::sample::select(vec![",", ", ", " ,", " , ", ",,", ",\t"]), 40),
        lead in prop::sample::select(vec!["", " ", "\t", " ,"]),
        text in "([^\\p{Cc}]|\t){0,80}",
        crlf in any::<bool>(),
    ) {
        prop_assert!(!login_chars_refused(&sender));
        let names: Vec<&str> = picks.iter().map(|i| pool[i.index(pool.len())].as_str()).collect();
        let mut line = String::from(lead);
        for (k, name) in names.iter().enumerate() {
            if k > 0 {
                line.push_str(seps[k]);
            }
            line.push_str(name);
        }
        line.push(':');
        line.push_str(&text);
        line.push_str(if crlf { "\r\n" } else { "\n" });

        let mut framer = LineFramer::new(line.len());
        framer.push(line.as_bytes());
        let framed = framer.next_line().expect("a complete line").expect("a valid line");
        let msg = parse_message(framed, 64).expect("a valid message");

        let mut distinct: Vec<&str> = Vec::new();
        for name in &names {
            if !distinct.contains(name) {
                distinct.push(name);
            }
        }
        prop_assert_eq!(msg.recipients().collect::<Vec<_>>(), distinct);
        let delivery = format_delivery(&sender, msg.text);
        let expected = format!("from {sender}: {}\n", text.trim());
        prop_assert_eq!(String::from_utf8(delivery).unwrap(), expected);
        prop_assert!(framer.next_line().is_none());
    }

    /// The fast scan for terminal control agrees with the plain one on any text, control
    /// characters anywhere among multi-byte ones (0xC2 leads both C1 controls and `«`).
    #[test]
    fn the_control_scan_matches_its_reference(
        text in prop_oneof![any::<String>(), "[a\t\x1b\x7f\u{80}\u{9f}\u{a0}\u{ab}\u{202e}]{0,70}"],
    ) {
        prop_assert_eq!(has_control(&text), has_control_reference(&text), "{:?}", text);
    }

    /// A line parsed as the sibling of an accepted message (`parse_after`) gets exactly
    /// what parse_message says of it, whenever parse_after takes it at all; and a line
    /// whose recipients are written the same way is always taken.
    #[test]
    fn parse_after_agrees_with_parse_message(
        first in "[a-c ,]{0,12}:[a-z \t\x1b]{0,20}",
        line in prop_oneof![any::<String>(), "[a-c ,:\t\x1b\u{85}]{0,40}"],
        max in 1usize..8,
    ) {
        if let Ok(msg) = parse_message(&first, max) {
            let dest = msg.dest();
            for line in [line.clone(), format!("{dest}:{line}"), format!("{dest}: {line}")] {
                let after = parse_after(&line, dest);
                if line.starts_with(&format!("{dest}:")) {
                    prop_assert!(after.is_some(), "{:?} after {:?}", line, dest);
                }
                if let Some(after) = after {
                    let plain = parse_message(&line, max);
                    prop_assert_eq!(
                        after.map(|m| (m.dest(), m.text)),
                        plain.map(|m| (m.dest(), m.text)),
                        "{:?} after {:?}", line, dest
                    );
                }
            }
        }
    }

    /// parse_message never panics, and what it accepts is well formed.
    #[test]
    fn parse_message_never_panics(
        line in prop_oneof![any::<String>(), "[a-c ,:\t]{0,40}", "[^\n]{0,60}"],
        max in 0usize..8,
    ) {
        match parse_message(&line, max) {
            Err(MessageError::NoColon) => prop_assert!(!line.contains(':')),
            Err(MessageError::ControlCharacter) => {
                prop_assert!(has_control_reference(line.split_once(':').unwrap().1.trim()));
            }
            Err(_) => {}
            Ok(msg) => {
                let (dest, rest) = line.split_once(':').unwrap();
                prop_assert_eq!(msg.text, rest.trim());
                prop_assert!(!has_control_reference(msg.text));
                let recipients: Vec<&str> = msg.recipients().collect();
                prop_assert!(!recipients.is_empty());
                prop_assert!(recipients.len() <= max);
                for (i, r) in recipients.iter().enumerate() {
                    prop_assert!(!r.is_empty() && *r == r.trim() && !r.contains(','));
                    prop_assert!(dest.contains(r));
                    prop_assert!(!recipients[..i].contains(r), "{:?} twice", r);
                }
            }
        }
    }
}

/// What `has_control` must say, written the obvious way: a C0 control other than TAB,
/// DEL, or a C1 control, by characters.
fn has_control_reference(text: &str) -> bool {
    text.chars()
        .any(|c| (c < ' ' && c != '\t') || ('\u{7f}'..='\u{9f}').contains(&c))
}

/// A-chat's own part of the login rule: the names a message can carry.
fn login_chars_refused(name: &str) -> bool {
    name.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == ',')
}

/// Recipient names: 1 to 16 characters, none of them whitespace, `:`, `,` or control.
fn login_strategy() -> impl Strategy<Value = String> {
    "[^\\s:,\\p{Cc}]{1,16}"
}
