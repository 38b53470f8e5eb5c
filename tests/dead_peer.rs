//! A client whose machine vanishes (no FIN, no reset) against the real binary: its login is
//! freed within `dead_peer_timeout`, and its close line says `peer_vanished`.
//!
//! The vanishing client lives in a network namespace this test makes (`ip netns`, a veth
//! pair with addresses in 10.213.0.0/16); taking its end of the pair down makes every packet
//! between it and the daemon disappear, as a dropped Wi-Fi does. Needs root (CI runs as
//! root).
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Daemon, Start};

/// Runs `ip` with `args`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair; removed (with the pair) on drop.
struct Netns {
    name: String,
    /// The pair's end inside the namespace.
    inner: String,
    /// The host's address on the pair, where the daemon listens for the namespace.
    host: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id();
        let (a, b) = ((id >> 8) % 250 + 1, id % 250 + 1);
        let name = format!("achat-dp-{id}");
        let (outer, inner) = (format!("vh{id}"), format!("vn{id}"));
        let (host, guest) = (format!("10.213.{a}.{b}"), format!("10.214.{a}.{b}"));
        let ns = Netns {
            name: name.clone(),
            inner: inner.clone(),
            host: host.clone(),
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["addr", "add", &format!("{host}/32"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        ip(&["route", "add", &format!("{guest}/32"), "dev", &outer]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{guest}/32"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["route", "add", &format!("{host}/32"), "dev", &inner]);
        ns
    }

    /// Cuts the cable: the namespace's end goes down, and nothing crosses in either direction.
    fn vanish(&self) {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "link",
            "set",
            &self.inner,
            "down",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A client inside the namespace that logs in as `name`, says so on stdout, and then stays
/// silent for a minute without closing.
fn client_inside(ns: &Netns, addr: SocketAddr, name: &str) -> Child {
    let script = format!(
        "import socket, sys, time\n\
         s = socket.create_connection(('{}', {}), timeout=10)\n\
         s.sendall(b'{name}\\n{name}: here\\n')\n\
         f = s.makefile('rb')\n\
         print(f.readline().decode().strip(), flush=True)\n\
         time.sleep(60)\n",
        addr.ip(),
        addr.port()
    );
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the client in the namespace")
}

#[test]
fn a_vanished_client_frees_its_login_within_dead_peer_timeout() {
    let ns = Netns::new();
    let mut d = Daemon::start_with(Start {
        toml: format!(
            "[server]\nlisten = [\"127.0.0.1:0\", \"{}:0\"]\n\
             [limits]\ndead_peer_timeout = \"4s\"\n",
            ns.host
        ),
        ..Start::default()
    });
    let line = d
        .wait_log(|l| l.contains(&format!("listening on {}:", ns.host)))
        .expect("no listener on the namespace's side");
    let far: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"));
    let mut ghost = client_inside(&ns, far, "ghost");
    let mut said = String::new();
    BufReader::new(ghost.stdout.take().unwrap())
        .read_line(&mut said)
        .expect("read the namespace client");
    assert_eq!(said.trim(), "from ghost: here", "the client did not log in");

    // While it lives, its login is taken.
    let mut taker = Client::connect(d.addr);
    taker.send("ghost");
    taker.expect("error: login \"ghost\" is taken");

    ns.vanish();
    let vanished = Instant::now();
    let freed = loop {
        let mut c = Client::connect(d.addr);
        c.send("ghost");
        c.send("ghost: back");
        match c.line().as_deref() {
            Some("from ghost: back") => break vanished.elapsed(),
            Some(l) if l.contains("is taken") => {}
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            vanished.elapsed() < Duration::from_secs(30),
            "the login was not freed within 30 s:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("login freed {freed:?} after the client vanished (dead_peer_timeout 4 s)");
    let close = d
        .wait_log(|l| l.contains("connection closed") && l.contains("peer_vanished"))
        .unwrap_or_else(|| panic!("no peer_vanished close line:\n{}", d.log_text()));
    assert!(close.contains("login=\"ghost\""), "{close}");
    // 4 s and the probes' rounding; without the probes it is never freed.
    assert!(freed < Duration::from_secs(15), "freed after {freed:?}");
    let _ = ghost.kill();
    let _ = ghost.wait();
}
