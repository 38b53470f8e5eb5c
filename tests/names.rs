//! ARCHITECTURE §1, names and text people can trust, against the real binary: logins that look
//! like a live one are taken, invisible characters never make a login, recipients are
//! matched by look, message text carries no terminal control, and the client shows what
//! a server sends without letting it drive the terminal.
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Daemon, WAIT};

/// Sends `name` as a login and expects the refusal `error` and a close.
fn refused(d: &Daemon, name: &str, error: &str) {
    let mut c = d.connect();
    c.send(name);
    c.expect(error);
    c.expect_closed();
}

fn taken(d: &Daemon, name: &str) {
    refused(d, name, &format!("error: login \"{name}\" is taken"));
}

/// Logs in as `name` as soon as the router has let the previous holder of its look go.
fn login_once_free(d: &Daemon, name: &str) -> Client {
    let started = Instant::now();
    loop {
        let mut c = d.connect();
        c.send(name);
        c.send(&format!("{name}: ready?"));
        match c.line() {
            Some(line) if line == format!("from {name}: ready?") => return c,
            Some(line) if line.ends_with("is taken") && started.elapsed() < WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("login {name:?}: {other:?}"),
        }
    }
}

#[test]
fn look_alike_and_case_logins_are_taken_while_the_original_is_online() {
    let d = Daemon::start();
    let alice = d.login("alice");
    // Cyrillic а (U+0430), other cases, and 1 for l: all read as "alice".
    for name in ["\u{430}lice", "Alice", "ALICE", "a1ice"] {
        taken(&d, name);
    }
    drop(alice);
    let mut fake = login_once_free(&d, "\u{430}lice");
    // Now the look-alike holds the look: the original is the later one.
    taken(&d, "alice");
    fake.send("\u{430}lice: still me");
    fake.expect("from \u{430}lice: still me");
    drop(fake);
    login_once_free(&d, "Alice");
}

#[test]
fn invisible_and_bidi_characters_never_make_a_login() {
    let d = Daemon::start();
    let bob = d.login("bob");
    refused(
        &d,
        "bob\u{200B}",
        "error: login may not contain U+200B: whitespace, ':', ',', control, invisible and \
         unassigned characters are not allowed",
    );
    refused(
        &d,
        "\u{202E}bob",
        "error: login may not contain U+202E: whitespace, ':', ',', control, invisible and \
         unassigned characters are not allowed",
    );
    drop(bob);
    // Not a question of who is online: they stay refused once bob has left.
    let mut c = d.connect();
    c.send("bob\u{200B}");
    let line = c.line().unwrap();
    assert!(
        line.starts_with("error: login may not contain U+200B"),
        "{line}"
    );
    login_once_free(&d, "Bob");
}

#[test]
fn a_login_not_in_normal_form_is_told_the_right_one() {
    let d = Daemon::start();
    refused(
        &d,
        "e\u{301}lodie",
        "error: login is not in Unicode normal form (NFC, no full-width letters): send it \
         as \"\u{e9}lodie\"",
    );
    d.login("\u{e9}lodie");
}

#[test]
fn the_ascii_charset_refuses_everything_else() {
    let d = Daemon::with_toml("[limits]\nlogin_charset = \"ascii\"\n");
    refused(
        &d,
        "\u{e9}lodie",
        "error: login may only contain ASCII letters, digits, '_', '-' and '.' on this server",
    );
    d.login("Bob.x_1-2");
}

#[test]
fn recipients_are_matched_by_look_and_shown_as_their_owner_logged_in() {
    let d = Daemon::start();
    let mut alice = d.login("Alice");
    let mut bob = d.login("bob");
    bob.send("alice: hi");
    alice.expect("from bob: hi");
    // Listed in three spellings: still one person, one delivery.
    bob.send("ALICE, \u{430}lice, Alice: once");
    alice.expect("from bob: once");
    alice.send("BOB: back");
    bob.expect("from Alice: back");
    alice.send("Alice: me");
    alice.expect("from Alice: me");
    bob.send("alicf: nobody");
    bob.expect("error: no such user \"alicf\"");
}

#[test]
fn terminal_control_in_text_is_refused_and_never_delivered() {
    let d = Daemon::start();
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    for text in [
        "\x1b]0;pwned title\x07 \x1b[31m red \x1b[0m",
        "ring \x07",
        "erase\x08\x08",
        "c1 \u{9b}31m",
        "del \x7f",
        "cr \r over",
    ] {
        bob.send(&format!("alice: {text}"));
        bob.expect("error: control characters are not allowed");
    }
    // TAB and bidi overrides and isolates are text: delivered as sent.
    bob.send("alice: a\tb \u{202E}olleh\u{202C} \u{2067}x\u{2069}");
    alice.expect("from bob: a\tb \u{202E}olleh\u{202C} \u{2067}x\u{2069}");
    // The connection stayed, and nothing refused reached alice.
    bob.send("alice: fine");
    alice.expect("from bob: fine");
    assert_eq!(alice.line_within(Duration::from_millis(200)), None);
}

/// What a hostile server sends: a title change, colours, backspaces, a C1 CSI, a
/// right-to-left override and a byte that is not UTF-8.
const HOSTILE: &[u8] =
    b"from x: \x1b]0;pwned\x07 \x1b[31mred\x1b[0m \x08\x08 \xc2\x9b2J \xe2\x80\xaeevil \xff end\n";

/// A one-shot server that sends `bytes` to the first client, then closes.
fn fake_server(bytes: &'static [u8]) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(bytes).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        // Whatever the client sends until it closes.
        let _ = conn.set_read_timeout(Some(WAIT));
        let _ = conn.read_to_end(&mut Vec::new());
    });
    (addr, server)
}

/// Runs the client on a terminal (`script` gives it one) against a one-shot server that
/// sends `bytes`: its exit status and all it showed.
fn client_on_a_terminal(bytes: &'static [u8]) -> (std::process::ExitStatus, Vec<u8>) {
    let (addr, server) = fake_server(bytes);
    let client = format!("{} client {addr}", common::bin().display());
    let mut child = Command::new("timeout")
        .args(["10", "script", "-q", "-e", "-c", &client, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run script (bsdutils)");
    // Input stays open: the client ends because the server closed.
    let stdin = child.stdin.take();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    server.join().unwrap();
    (status, out)
}

#[test]
fn the_client_shows_control_characters_visibly_on_a_terminal() {
    let (status, out) = client_on_a_terminal(HOSTILE);
    let text = String::from_utf8_lossy(&out);
    assert!(status.success(), "exit {status:?}: {text}");
    assert!(
        text.contains(
            "from x: ^[]0;pwned^G ^[[31mred^[[0m ^H^H <U+009B>2J <U+202E>evil \u{fffd} end"
        ),
        "{text:?}"
    );
    assert!(!out.contains(&0x1b) && !out.contains(&0x07), "{text:?}");
}

#[test]
fn the_client_passes_bytes_through_when_piped() {
    let (addr, server) = fake_server(HOSTILE);
    let out = Command::new(common::bin())
        .args(["client", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    server.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, HOSTILE);
}

#[test]
fn the_client_holds_a_bounded_line() {
    // 1 MiB without a newline, then a short line: the long one is shown cut.
    static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let long = LONG.get_or_init(|| {
        let mut v = vec![b'x'; 1 << 20];
        v.extend_from_slice(b"\nfrom y: after\n");
        v
    });
    let (status, out) = client_on_a_terminal(long);
    assert!(status.success());
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("[line cut:"), "{}", &text[text.len() - 200..]);
    assert!(text.contains("from y: after"));
    assert!(out.len() < 100 * 1024, "{} bytes shown", out.len());
}
