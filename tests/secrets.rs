//! Secrets against the real binary: a Redis password is never printed (errors at start
//! and at reload, check-config, the log at trace level), and keys, users files and the
//! Redis password are read as systemd credentials from `$CREDENTIALS_DIRECTORY`, at start
//! and again at every reload.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::cluster::{self, Redis};
use common::tlsclient::TlsClient;
use common::{run_cli_env, run_cli_input, Daemon, Pki, Start};

/// The password every test hides; nothing a-chat prints may contain it.
const PASSWORD: &str = "Sup3rS3cretRedisPw";

/// Asserts that none of `outputs` (name, text) holds the password.
fn nowhere(outputs: &[(&str, &str)]) {
    for (name, text) in outputs {
        assert!(
            !text.contains(PASSWORD),
            "{name} prints the Redis password:\n{text}"
        );
    }
}

/// A directory laid out as systemd lays out `$CREDENTIALS_DIRECTORY`: mode 0700, each
/// credential a file of mode 0600 (here owned by the test's user, as systemd makes them
/// the unit's).
struct Credentials {
    dir: tempfile::TempDir,
}

impl Credentials {
    fn new() -> Credentials {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Credentials { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes credential `name` (mode 0600), replacing it as a whole.
    fn put(&self, name: &str, contents: &[u8]) {
        let path = self.path().join(name);
        let new = self.path().join(format!(".{name}.new"));
        std::fs::write(&new, contents).unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(new, path).unwrap();
    }

    fn copy(&self, name: &str, from: impl AsRef<Path>) {
        self.put(name, &std::fs::read(from).unwrap());
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(
            "CREDENTIALS_DIRECTORY".into(),
            self.path().to_str().unwrap().into(),
        )]
    }
}

/// A users file with one line per `(name, password)`, made by `a-chat passwd`.
fn users(list: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from("[users]\n");
    for (name, password) in list {
        let (status, out, err) =
            run_cli_input(&["passwd", name], format!("{password}\n").as_bytes());
        assert!(status.success(), "a-chat passwd {name}: {err}");
        text += out.trim_end();
        text.push('\n');
    }
    text.into_bytes()
}

/// Logs in over TLS with a password; the line the server answered a message to self with.
fn tls_login(addr: std::net::SocketAddr, pki: &Pki, name: &str, password: &str) -> String {
    let mut c = TlsClient::connect(addr, pki, None).expect("TLS handshake");
    c.send(&format!("{name} {password}"));
    c.send(&format!("{name}: ready?"));
    c.line().unwrap_or_else(|| "closed".into())
}

/// Writes `toml` to a file of its own and runs `a-chat check-config` on it.
fn check_config(toml: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-chat.toml");
    std::fs::write(&path, toml).unwrap();
    let (status, out, err) = run_cli_env(&["check-config", path.to_str().unwrap()], env, b"");
    (status.success(), out, err)
}

#[test]
fn a_redis_password_is_printed_nowhere() {
    let _serial = cluster::serial();
    let redis = Redis::start();
    let port = redis.addr.port();
    let good = format!("redis://default:{PASSWORD}@127.0.0.1:{port}/");
    // A port out of range: the URL does not parse.
    let bad = format!("redis://default:{PASSWORD}@127.0.0.1:99999/");
    let config = |url: &str| format!("[cluster]\nredis = \"{url}\"\nnode_id = \"n1\"\n");

    let (ok, out, err) = check_config(&config(&good), &[]);
    assert!(ok, "{err}");
    assert!(out.contains("redis://default:***@127.0.0.1:"), "{out}");
    nowhere(&[
        ("check-config (good URL), stdout", &out),
        ("its stderr", &err),
    ]);

    let (ok, out, err) = check_config(&config(&bad), &[]);
    assert!(!ok && err.contains("cluster.redis"), "{err}");
    nowhere(&[
        ("check-config (bad URL), stdout", &out),
        ("its stderr", &err),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config(&bad)).unwrap();
    let path = path.to_str().unwrap();
    let (status, out, err) = run_cli_input(&["server", "--config", path], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("not a Redis URL"), "{err}");
    nowhere(&[("server (bad URL), stdout", &out), ("its stderr", &err)]);
    let flag = format!("cluster.redis={bad}");
    let (status, out, err) = run_cli_input(&["server", "--set", &flag], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    nowhere(&[
        ("server --set (bad URL), stdout", &out),
        ("its stderr", &err),
    ]);

    // A node with the password in its URL, logging at trace level, joins; a reload with
    // a URL that does not parse fails, and its error line hides the password too.
    redis.command(&[b"CONFIG", b"SET", b"requirepass", PASSWORD.as_bytes()]);
    let toml = |url: &str| {
        format!(
            "[log]\nlevel = \"trace\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            config(url)
        )
    };
    let mut node = Daemon::with_toml(&toml(&good));
    node.wait_log(|l| l.contains("joined the cluster"))
        .unwrap_or_else(|| panic!("no join:\n{}", node.log_text()));
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, text.replace(&good, &bad)).unwrap();
    node.signal(libc::SIGHUP);
    let line = node
        .wait_log(|l| l.contains("reload failed"))
        .unwrap_or_else(|| panic!("no reload error:\n{}", node.log_text()));
    assert!(line.contains("cluster.redis"), "{line}");
    node.signal(libc::SIGTERM);
    node.summary();
    let log = node.log_text();
    assert!(
        log.contains(" DEBUG ") || log.contains(" TRACE "),
        "not verbose:\n{log}"
    );
    nowhere(&[("the node's log at trace level", &log)]);
}

#[test]
fn the_key_and_the_users_file_are_read_as_credentials_at_start_and_at_reload() {
    let pki = Pki::new();
    let creds = Credentials::new();
    creds.copy("server.pem", pki.path("server.pem"));
    creds.copy("server.key", pki.path("server.key"));
    creds.put("users", &users(&[("alice", "wonderland")]));
    let toml = "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"credential:server.pem\"\n\
                key = \"credential:server.key\"\n[auth]\nusers_file = \"credential:users\"\n";
    let mut d = Daemon::start_with(Start {
        toml: toml.into(),
        env: creds.env(),
        ..Start::default()
    });
    let addr = d.tls_addr();
    assert_eq!(
        tls_login(addr, &pki, "alice", "wonderland"),
        "from alice: ready?"
    );
    let before = TlsClient::connect(addr, &pki, None)
        .unwrap()
        .server_certificate();

    // A renewed key and a new users file, put where systemd puts them; SIGHUP reads both.
    pki.renew_server();
    creds.copy("server.pem", pki.path("server.pem"));
    creds.copy("server.key", pki.path("server.key"));
    creds.put("users", &users(&[("bob", "builder")]));
    d.signal(libc::SIGHUP);
    d.wait_log(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log_text()));
    let after = TlsClient::connect(addr, &pki, None)
        .unwrap()
        .server_certificate();
    assert_ne!(
        before, after,
        "the reload did not re-read the key and certificate"
    );
    assert_eq!(tls_login(addr, &pki, "bob", "builder"), "from bob: ready?");
    assert_eq!(
        tls_login(addr, &pki, "alice", "wonderland"),
        "error: authentication failed"
    );

    // check-config says where each file came from.
    let dir = creds.path().to_str().unwrap();
    let (ok, out, err) = check_config(toml, &[("CREDENTIALS_DIRECTORY", dir)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("# tls.key: systemd credential \"server.key\""),
        "{out}"
    );
    assert!(out.contains(&format!("{dir}/users")), "{out}");
}

#[test]
fn a_credential_that_is_not_there_stops_the_start_with_one_clear_line() {
    let creds = Credentials::new();
    let toml = "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nusers_file = \"credential:users\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("a-chat.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap();
    // No $CREDENTIALS_DIRECTORY: not under a unit with LoadCredential=.
    let (status, _, err) = run_cli_env(&["server", "--config", path], &[], b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 4, key `auth.users_file`"), "{err}");
    assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
    // The directory, without that credential.
    let env = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
    let (status, _, err) = run_cli_env(&["server", "--config", path], &env, b"");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("LoadCredential=users:"), "{err}");
    let (ok, _, err) = check_config(toml, &env);
    assert!(!ok && err.contains("LoadCredential=users:"), "{err}");
}

#[test]
fn the_redis_password_is_read_from_its_file_never_from_the_url_too() {
    let _serial = cluster::serial();
    let redis = Redis::start();
    redis.command(&[b"CONFIG", b"SET", b"requirepass", PASSWORD.as_bytes()]);
    let creds = Credentials::new();
    creds.put("redis-password", format!("{PASSWORD}\n").as_bytes());
    let extra = "redis_password_file = \"credential:redis-password\"\n[log]\nlevel = \"trace\"\n";
    let mut node = Daemon::start_with(Start {
        toml: format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[cluster]\nredis = \"{}\"\nnode_id = \"n1\"\n{extra}",
            redis.url()
        ),
        env: creds.env(),
        ..Start::default()
    });
    node.wait_log(|l| l.contains("joined the cluster"))
        .unwrap_or_else(|| panic!("the password file was not used:\n{}", node.log_text()));
    // A reload reads the file again: emptied, it fails, naming the file and not the password.
    creds.put("redis-password", b"");
    node.signal(libc::SIGHUP);
    let line = node
        .wait_log(|l| l.contains("reload failed"))
        .unwrap_or_else(|| panic!("no reload error:\n{}", node.log_text()));
    assert!(line.contains("redis_password_file"), "{line}");
    node.signal(libc::SIGTERM);
    node.summary();
    nowhere(&[("the node's log", &node.log_text())]);

    // A password in the URL as well: refused, without printing either.
    let url = redis
        .url()
        .replace("redis://", &format!("redis://:{PASSWORD}@"));
    let toml = format!("[cluster]\nredis = \"{url}\"\n{extra}");
    let env = [("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())];
    creds.put("redis-password", format!("{PASSWORD}\n").as_bytes());
    let (ok, out, err) = check_config(&toml, &env);
    assert!(!ok && err.contains("remove it from the URL"), "{err}");
    nowhere(&[("check-config, stdout", &out), ("its stderr", &err)]);
}
