//! `a-chat reload` and the admin endpoint's `POST /reload` against the real binary: the
//! outcome of a reload reaches whoever asked for it, as an exit status (what `systemctl
//! reload` reports through `ExecReload=`), and reloads asked for at once are served together.
mod common;

use std::fs;

use common::Daemon;

fn metric(d: &mut Daemon, name: &str) -> f64 {
    let admin = d.admin_addr();
    common::sample(&common::scrape(admin), name)
}

const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn a_good_reload_exits_0_and_says_what_it_applied() {
    let mut d = Daemon::with_toml(BASE);
    let admin = d.admin_addr().to_string();
    let mut alice = d.login("alice");
    fs::write(
        &d.config_path,
        format!("{BASE}[limits]\nmax_line_bytes = 100\n"),
    )
    .unwrap();
    let (status, out, err) = common::run_cli_within(&["reload", "--admin", &admin]);
    assert!(status.success(), "{status:?} {out} {err}");
    assert_eq!(out.trim(), "reloaded: applied limits", "{err}");
    // In force when the command returned: a 200-byte line is now too long.
    let mut bob = d.login("bob");
    bob.send(&format!("alice: {}", "z".repeat(200)));
    assert!(bob.line().unwrap().starts_with("error: line too long"));
    alice.send("alice: still here");
    alice.expect("from alice: still here");
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"ok\"}"),
        1.0
    );
}

#[test]
fn a_refused_reload_exits_1_with_the_reason_and_changes_nothing() {
    let mut d = Daemon::with_toml(BASE);
    let admin = d.admin_addr().to_string();
    let broken = format!("{BASE}[limits]\nmax_line_bytes = 100\nmax_lines = 3\n");
    fs::write(&d.config_path, broken).unwrap();
    let (status, out, err) = common::run_cli_within(&["reload", "--admin", &admin]);
    assert_eq!(status.code(), Some(1), "{out} {err}");
    assert!(
        err.contains("reload failed, the settings in force stay")
            && err.contains("limits.max_lines"),
        "{err}"
    );
    // Nothing applied: a 200-byte line still goes through.
    let mut alice = d.login("alice");
    alice.send(&format!("alice: {}", "z".repeat(200)));
    alice.expect(&format!("from alice: {}", "z".repeat(200)));
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"error\"}"),
        1.0
    );
}

#[test]
fn with_config_the_file_says_where_to_ask() {
    let admin = common::free_addr();
    let base = format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n");
    let mut d = Daemon::with_toml(&base);
    let path = d.config_path.to_str().unwrap().to_owned();
    // The file names the admin endpoint: `--config` alone finds it.
    fs::write(&d.config_path, format!("{base}[log]\nlevel = \"debug\"\n")).unwrap();
    let (status, out, err) = common::run_cli_within(&["reload", "--config", &path]);
    assert!(status.success(), "{status:?} {out} {err}");
    assert_eq!(out.trim(), "reloaded: applied log.level", "{err}");
    // A file the daemon refuses: exit 1 with the daemon's reason.
    fs::write(&d.config_path, format!("{base}[limits]\nmax_lines = 3\n")).unwrap();
    let (status, _, err) = common::run_cli_within(&["reload", "--config", &path]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("limits.max_lines"), "{err}");
    // A file that is not TOML at all: exit 1, and the daemon was not asked.
    fs::write(&d.config_path, format!("{base}[limits\n")).unwrap();
    let (status, _, err) = common::run_cli_within(&["reload", "--config", &path]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the daemon was not asked"), "{err}");
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(
        metric(&mut d, "achat_config_reloads_total{result=\"ok\"}"),
        1.0
    );
}

#[test]
fn without_an_admin_endpoint_the_pid_gets_sighup() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let mut d = Daemon::with_toml(base);
    let path = d.config_path.to_str().unwrap().to_owned();
    fs::write(&d.config_path, format!("{base}[log]\nlevel = \"debug\"\n")).unwrap();
    let (status, _, err) = common::run_cli_within(&["reload", "--config", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("nowhere to ask for a reload"), "{err}");
    let pid = d.pid().to_string();
    let (status, out, err) = common::run_cli_within(&["reload", "--config", &path, "--pid", &pid]);
    assert!(status.success(), "{out} {err}");
    assert!(out.contains(&format!("sent SIGHUP to {pid}")), "{out}");
    d.wait_log(|l| l.contains("configuration reloaded") && l.contains("log.level"))
        .unwrap_or_else(|| panic!("no reload after SIGHUP; log:\n{}", d.log_text()));
}

#[test]
fn reloads_asked_for_at_once_are_served_together_and_all_answered() {
    let mut d = Daemon::with_toml(BASE);
    let admin = d.admin_addr();
    fs::write(&d.config_path, format!("{BASE}[log]\nlevel = \"debug\"\n")).unwrap();
    let askers: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let request = b"POST /reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                common::http_raw(admin, request).expect("an answer")
            })
        })
        .collect();
    for asker in askers {
        let answer = asker.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(
            answer.text().starts_with("reloaded: applied"),
            "{}",
            answer.text()
        );
    }
    // One reload in a row at most while others wait: 12 asks cost at most 12 reloads,
    // and the GET that only reads is refused with the method that works.
    let done = metric(&mut d, "achat_config_reloads_total{result=\"ok\"}");
    assert!((1.0..=12.0).contains(&done), "{done} reloads");
    let get = common::http_get(admin, "/reload");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}
