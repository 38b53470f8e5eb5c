//! Tests of the protocol's pure functions (src/protocol.rs).

use super::*;

fn lines(framer: &mut LineFramer) -> Vec<Result<String, FrameError>> {
    let mut out = Vec::new();
    while let Some(r) = framer.next_line() {
        let stop = r.is_err();
        out.push(r.map(str::to_owned));
        if stop {
            break;
        }
    }
    out
}

#[test]
fn frames_lines_and_strips_crlf() {
    let mut f = LineFramer::new(100);
    f.push(b"alice\r\nbob: hi\nparti");
    assert_eq!(
        lines(&mut f),
        vec![Ok("alice".into()), Ok("bob: hi".into())]
    );
    assert_eq!(f.partial_len(), 5);
    f.push(b"al\n");
    assert_eq!(lines(&mut f), vec![Ok("partial".into())]);
    assert_eq!(f.partial_len(), 0);
}

#[test]
fn a_line_of_exactly_max_bytes_is_fine_one_more_is_not() {
    let mut f = LineFramer::new(4);
    f.push(b"abcd\r\nabcd\n");
    assert_eq!(lines(&mut f), vec![Ok("abcd".into()), Ok("abcd".into())]);
    f.push(b"abcd\r");
    assert_eq!(lines(&mut f), vec![]);
    f.push(b"\n");
    assert_eq!(lines(&mut f), vec![Ok("abcd".into())]);
    f.push(b"abcde\n");
    assert_eq!(lines(&mut f), vec![Err(FrameError::LineTooLong)]);
}

#[test]
fn an_endless_line_is_refused_before_it_is_buffered() {
    let mut f = LineFramer::new(8);
    f.push(b"12345678");
    assert_eq!(lines(&mut f), vec![]);
    f.push(b"9");
    assert_eq!(lines(&mut f), vec![Err(FrameError::LineTooLong)]);
}

#[test]
fn invalid_utf8_is_an_error() {
    let mut f = LineFramer::new(100);
    f.push(b"ok\n\xff\xfe\n");
    assert_eq!(
        lines(&mut f),
        vec![Ok("ok".into()), Err(FrameError::InvalidUtf8)]
    );
}

#[test]
fn a_pending_partial_line_is_kept() {
    let mut f = LineFramer::new(100);
    f.push(b"a\nb");
    assert_eq!(lines(&mut f), vec![Ok("a".into())]);
    assert_eq!(f.partial_len(), 1);
    f.shrink_if_idle();
    assert_eq!(f.partial_len(), 1, "a pending partial line is kept");
}

#[test]
fn an_idle_framer_gives_its_memory_back() {
    let mut f = LineFramer::new(100_000);
    f.push(&[b'x'; 60_000]);
    f.push(b"\nbob: par");
    assert_eq!(lines(&mut f).len(), 1);
    f.shrink_if_idle();
    assert_eq!(f.partial_len(), 8);
    assert!(f.buf.capacity() < 1024, "kept {} bytes", f.buf.capacity());
    f.push(b"tial\n");
    assert_eq!(lines(&mut f), vec![Ok("bob: partial".into())]);
    f.shrink_if_idle();
    assert_eq!(f.buf.capacity(), 0);
}

#[test]
fn terminal_control_in_text_is_refused() {
    for bad in [
        "\x1b[31m", "ring\x07", "a\x08", "\x00", "del\x7f", "\u{9b}2J", "x\u{85}",
    ] {
        assert!(has_control(bad), "{bad:?}");
        let line = format!("bob: ok {bad} ok");
        assert_eq!(parse_message(&line, 8), Err(MessageError::ControlCharacter));
    }
    let long = format!("{}\x1b{}", "a".repeat(40), "b".repeat(40));
    assert!(has_control(&long), "found past the first blocks");
    // Every length around the block size, a control at every place (the last block
    // overlaps the one before it): each is found, and its absence too.
    for n in 0..70 {
        assert!(!has_control(&"«".repeat(n)), "{n} × «");
        for at in 0..n {
            for control in ["\x1b", "\x7f", "\u{85}"] {
                let text = format!("{}{control}{}", "a".repeat(at), "b".repeat(n - at));
                assert!(has_control(&text), "{text:?}");
            }
        }
    }
    for fine in [
        "a\tb",
        "«ü» 30° ±1 ©",
        "\u{202e}olleh \u{2067}x\u{2069}",
        "",
        "\u{a0}x\u{bf}",
    ] {
        assert!(!has_control(fine), "{fine:?}");
        assert!(!has_control(&fine.repeat(9)), "{fine:?} in blocks");
    }
    assert_eq!(
        parse_message("bob: hi\t\x0c", 8).unwrap().text,
        "hi",
        "trimmed, never sent"
    );
    assert_eq!(
        MessageError::ControlCharacter.to_string(),
        "control characters are not allowed"
    );
}

#[test]
fn messages() {
    let msg = parse_message(" bob , carol,bob: hi there ", 64).unwrap();
    assert_eq!(msg.recipients().collect::<Vec<_>>(), ["bob", "carol"]);
    assert_eq!(msg.text, "hi there");
    assert_eq!(
        parse_message("bob: a: b", 64).unwrap().text,
        "a: b",
        "only the first colon splits"
    );
    assert_eq!(parse_message("hello", 64), Err(MessageError::NoColon));
    assert_eq!(
        parse_message(" , : hi", 64),
        Err(MessageError::NoRecipients)
    );
    assert_eq!(
        parse_message("a,b,c: hi", 2),
        Err(MessageError::TooManyRecipients)
    );
    assert_eq!(
        parse_message("a,a,a: hi", 2),
        Err(MessageError::TooManyRecipients)
    );
    let many: String = (0..40).map(|i| format!("u{},", i % 25)).collect();
    let line = format!("{many}: hi");
    let msg = parse_message(&line, 64).unwrap();
    let distinct: Vec<_> = msg.recipients().collect();
    let expected: Vec<_> = (0..25).map(|i| format!("u{i}")).collect();
    assert_eq!(distinct, expected, "long lists drop repeats too");
    let two = parse_message("a,, b: hi", 2).unwrap();
    assert_eq!(two.recipients().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(parse_message("bob:", 2).unwrap().text, "");
}

#[test]
fn formatting() {
    assert_eq!(format_delivery("alice", "hi"), b"from alice: hi\n");
    assert_eq!(format_error("line too long"), b"error: line too long\n");
    assert!(error_closes_connection("error: line too long"));
    assert!(error_closes_connection("error: login \"dave\" is taken"));
    assert!(!error_closes_connection("error: no such user \"zed\""));
    assert!(!error_closes_connection(
        "error: not a message: write \"name1, name2: text\""
    ));
    assert!(!error_closes_connection(
        "from alice: error: looks like one"
    ));
    assert_eq!(
        format_notice("server shutting down"),
        b"notice: server shutting down\n"
    );
    assert_eq!(no_such_user("zed"), b"error: no such user \"zed\"\n");
}
