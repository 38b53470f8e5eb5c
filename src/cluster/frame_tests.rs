//! Tests of the relay frame and the directory events (`frame.rs`).

use super::*;

#[test]
fn records_come_back_as_written() {
    let mut w = FrameWriter::new("n1");
    assert!(w.is_empty());
    assert!(w.push("alice", &["bob", "carol"], b"from alice: hi\n"));
    assert!(w.push("dave", &["bob"], b"from dave: yo\n"));
    assert_eq!(w.deliveries(), 3);
    let frame = w.finish();
    let got: Vec<_> = records(&frame).unwrap().map(Result::unwrap).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].sender, "alice");
    assert_eq!(got[0].recipients, vec!["bob", "carol"]);
    assert_eq!(&frame[got[0].line.clone()], b"from alice: hi\n");
    assert_eq!(got[1].sender, "dave");
    assert_eq!(&frame[got[1].line.clone()], b"from dave: yo\n");
}

#[test]
fn a_frame_names_its_node_and_one_that_names_none_is_still_read() {
    let mut w = FrameWriter::new("node-7");
    w.push("alice", &["bob"], b"from alice: hi\n");
    let frame = w.finish();
    let records = records(&frame).unwrap();
    assert_eq!(records.source(), Some("node-7"));
    assert_eq!(records.count(), 1);
    // A node of an earlier version reads the naming record as a record for nobody.
    let mut old = Records {
        frame: &frame,
        at: MAGIC.len(),
        source: None,
    };
    let first = old.next().unwrap().unwrap();
    assert_eq!((first.sender, first.recipients.len()), ("", 0));
    assert_eq!(old.next().unwrap().unwrap().sender, "alice");
    // Merged, the second frame's naming record goes with its magic.
    let mut merged = frame.clone();
    merge(&mut merged, &frame);
    assert_eq!(super::records(&merged).unwrap().count(), 2);
    // The same record in a frame of an earlier version: no node named.
    let mut v1 = MAGIC.to_vec();
    v1.extend_from_slice(&frame[header("node-7").len()..]);
    let mut records = super::records(&v1).unwrap();
    assert_eq!(records.source(), None);
    assert_eq!(records.next().unwrap().unwrap().sender, "alice");
    // What is kept of a frame keeps its header.
    let (kept, _) = keep_light(&frame, 1024).unwrap();
    assert_eq!(super::records(&kept).unwrap().source(), Some("node-7"));
}

#[test]
fn merged_frames_read_as_one() {
    let mut a = FrameWriter::new("n1");
    a.push("alice", &["bob"], b"from alice: 1\n");
    let mut b = FrameWriter::new("n1");
    b.push("alice", &["bob"], b"from alice: 2\n");
    let mut frame = a.finish();
    merge(&mut frame, &b.finish());
    let lines: Vec<_> = records(&frame)
        .unwrap()
        .map(|r| frame[r.unwrap().line].to_vec())
        .collect();
    assert_eq!(
        lines,
        vec![b"from alice: 1\n".to_vec(), b"from alice: 2\n".to_vec()]
    );
}

#[test]
fn garbage_is_refused_without_panic() {
    assert_eq!(records(b"hello").err(), Some(FrameError::NotAFrame));
    let mut w = FrameWriter::new("n1");
    w.push("alice", &["bob"], b"from alice: hi\n");
    let frame = w.finish();
    // Every truncation ends in an error, never a panic or a record past the end.
    for cut in header("n1").len() + 1..frame.len() {
        let got: Vec<_> = records(&frame[..cut]).unwrap().collect();
        assert_eq!(
            got.last(),
            Some(&Err(FrameError::Malformed)),
            "cut at {cut}"
        );
    }
    // A recipient count far beyond the frame allocates nothing.
    let mut huge = header("n1");
    huge.extend_from_slice(&[1, 0, b'a', 0xff, 0xff]);
    assert_eq!(
        records(&huge).unwrap().next(),
        Some(Err(FrameError::Malformed))
    );
    // A name that is not UTF-8.
    let mut bad = header("n1");
    bad.extend_from_slice(&[1, 0, 0xff, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        records(&bad).unwrap().next(),
        Some(Err(FrameError::Malformed))
    );
}

#[test]
fn a_heavy_sender_is_left_out_and_a_light_one_kept() {
    let mut w = FrameWriter::new("n1");
    for i in 0..100 {
        w.push(
            "flood",
            &["a", "b"],
            format!("from flood: {i}\n").as_bytes(),
        );
        if i == 50 {
            w.push("alice", &["bob"], b"from alice: hi\n");
        }
    }
    let (kept, dropped) = keep_light(&w.finish(), 1024).unwrap();
    assert_eq!(dropped, 200);
    let got: Vec<_> = records(&kept).unwrap().map(Result::unwrap).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, "alice");
    assert_eq!(&kept[got[0].line.clone()], b"from alice: hi\n");
    assert_eq!(keep_light(b"junk", 1024), None);
}

/// One record each from 100 000 senders: sorting them out stays linear (a scan per
/// record over the senders seen took 26 s in a release build).
#[test]
fn many_senders_cost_linear_time() {
    let mut w = FrameWriter::new("n1");
    for i in 0..100_000 {
        w.push(&format!("s{i}"), &["b"], b"x\n");
    }
    let frame = w.finish();
    let started = std::time::Instant::now();
    let (kept, dropped) = keep_light(&frame, 1024).unwrap();
    assert_eq!((kept.len(), dropped), (frame.len(), 0));
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_malformed_record_ends_what_is_kept() {
    let mut w = FrameWriter::new("n1");
    w.push("alice", &["bob"], b"from alice: hi\n");
    let mut frame = w.finish();
    frame.extend_from_slice(b"\xff\xff\xff");
    let (kept, dropped) = keep_light(&frame, 1024).unwrap();
    assert_eq!(dropped, 0);
    let got: Vec<_> = records(&kept).unwrap().map(Result::unwrap).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, "alice");
}

#[test]
fn events_parse_and_refuse_the_rest() {
    assert_eq!(
        parse_event(b"L\nn1\nalice\nAlice"),
        Some(DirEvent::Login {
            node: "n1".into(),
            look: "alice".into(),
            login: "Alice".into()
        })
    );
    assert_eq!(
        parse_event(b"U\nn1\nalice"),
        Some(DirEvent::Logout {
            node: "n1".into(),
            look: "alice".into()
        })
    );
    assert_eq!(
        parse_event(b"D\nn2"),
        Some(DirEvent::NodeGone { node: "n2".into() })
    );
    for bad in [&b"X\nn1"[..], b"L\nn1\nalice", b"D\nn1\nmore", b"", b"\xff"] {
        assert_eq!(parse_event(bad), None, "{bad:?}");
    }
    assert_eq!(parse_entry(b"n1\nAlice"), Some(("n1", "Alice")));
    assert_eq!(parse_entry(b"n1"), None);
}
