//! Benchmarks of the hot pure functions: cutting a read buffer into lines, parsing
//! messages (with the scan for terminal control), and formatting deliveries; and the
//! login rule, which runs once per login. `cargo bench --bench protocol`.

use std::hint::black_box;

use a_chat::names::{canonical, validate_login, LoginCharset};
use a_chat::protocol::{format_delivery, has_control, parse_message, LineFramer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A read buffer as a busy client sends it: many 64-byte messages to one or three names.
fn batch(lines: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..lines {
        let to = if i % 4 == 0 {
            "bob, carol, dave"
        } else {
            "bob"
        };
        let text = format!("{i:08} lorem ipsum dolor sit amet consectetur adipiscing");
        buf.extend_from_slice(format!("{to}: {text}\n").as_bytes());
    }
    buf
}

fn framing_and_parsing(c: &mut Criterion) {
    let input = batch(1000);
    let mut group = c.benchmark_group("read batch of 1000 lines");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("frame", |b| {
        b.iter(|| {
            let mut framer = LineFramer::new(8192);
            framer.push(black_box(&input));
            let mut n = 0;
            while let Some(Ok(line)) = framer.next_line() {
                n += line.len();
            }
            n
        })
    });
    group.bench_function("frame + parse + format", |b| {
        b.iter(|| {
            let mut framer = LineFramer::new(8192);
            framer.push(black_box(&input));
            let mut bytes = 0;
            while let Some(Ok(line)) = framer.next_line() {
                let msg = parse_message(line, 64).unwrap();
                bytes += format_delivery("alice", msg.text).len() * msg.recipients().count();
            }
            bytes
        })
    });
    group.finish();
}

fn formatting(c: &mut Criterion) {
    let text = "00000001 lorem ipsum dolor sit amet consectetur adipiscing";
    c.bench_function("format one delivery", |b| {
        b.iter(|| format_delivery(black_box("alice"), black_box(text)))
    });
    c.bench_function("parse one message (3 recipients)", |b| {
        b.iter(|| {
            parse_message(black_box("bob, carol, dave: hello there"), 64)
                .map(|m| m.recipients().count())
        })
    });
}

/// What a login costs: the RFC 8265 rule and the canonical form (TS #39 skeleton of the
/// case-folded name), as the reader runs them once per login.
fn logins(c: &mut Criterion) {
    let mut group = c.benchmark_group("login rule + canonical form");
    for name in [
        "alice",
        "Zo\u{eb}-\u{c5}ngstr\u{f6}m",
        "\u{43f}\u{43e}\u{43b}\u{44c}\u{437}\u{43e}\u{432}\u{430}\u{442}\u{435}\u{43b}\u{44c}",
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let login = validate_login(black_box(name), 64, LoginCharset::Unicode).unwrap();
                canonical(login)
            })
        });
    }
    group.finish();
    c.bench_function("control scan of one 58-byte text", |b| {
        b.iter(|| {
            has_control(black_box(
                "00000001 lorem ipsum dolor sit amet consectetur adipiscing",
            ))
        })
    });
}

criterion_group!(benches, framing_and_parsing, formatting, logins);
criterion_main!(benches);
