//! Tests of the configuration: defaults, the shipped file, errors that name the file,
//! line and key, cross-key checks, and `--set`.

use super::*;

#[test]
fn empty_file_gives_the_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
    let d = Config::default();
    assert_eq!(d.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(d.limits.max_line_bytes, 8192);
    assert_eq!(d.admin.listen, None);
}

#[test]
fn the_shipped_file_is_valid_and_equals_the_defaults() {
    let text = include_str!("../../config/a-chat.toml");
    assert_eq!(Config::parse(text).unwrap(), Config::default());
}

#[test]
fn keys_parse() {
    let c = Config::parse(
        "[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[limits]\nidle_timeout = \"1m 30s\"\n[admin]\nlisten = \"127.0.0.1:9100\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    assert_eq!(c.server.listen.len(), 2);
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.admin.listen, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(c.log.format, LogFormat::Json);
    let c = Config::parse("[limits]\nlogin_charset = \"ascii\"\n").unwrap();
    assert_eq!(c.limits.login_charset, LoginCharset::Ascii);
    let e = Config::parse("[limits]\nlogin_charset = \"latin\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("limits.login_charset"), "{e}");
}

#[test]
fn unknown_key_names_line_and_path() {
    let e = Config::parse("[limits]\nmax_line_bytes = 100\nmax_lines = 3\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert_eq!(e.key.as_deref(), Some("limits.max_lines"), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn bad_duration_names_the_key() {
    let e = Config::parse("[limits]\nlogin_timeout = \"soon\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("limits.login_timeout"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn bad_address_and_range() {
    let e = Config::parse("[server]\nlisten = \"localhost:80\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.listen"), "{e}");
    assert!(e.message.contains("not an address"), "{e}");
    let e = Config::parse("\n[server]\nmax_connections = 0\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("server.max_connections"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
    let e = Config::parse("[limits]\nmax_line_bytes = -1\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("limits.max_line_bytes"), "{e}");
}

#[test]
fn type_errors_are_said_in_words() {
    let e = Config::parse("[limits]\nmax_line_bytes = -1\n").unwrap_err();
    assert!(
        e.message.contains("expected a whole number (0 or more)") && !e.message.contains("usize"),
        "{e}"
    );
    let e = Config::parse("[server]\nworker_threads = 1.5\n").unwrap_err();
    assert!(e.message.contains("the number `1.5`"), "{e}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = Config::parse("[server]\nlisten = \n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn a_log_level_typo_is_an_error_not_silence() {
    for good in [
        "info",
        "DEBUG",
        "a_chat=debug,info",
        "warn,a_chat::server=trace",
        "off",
    ] {
        check_log_filter(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["verbose", "", "info,loud", "=debug", "a_chat=chatty"] {
        assert!(check_log_filter(bad).is_err(), "{bad:?} passed");
    }
    let e = Config::parse("[log]\nlevel = \"verbose\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("log.level"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("not a log level"), "{e}");
}

#[test]
fn queues_too_small_for_the_servers_own_answers_are_refused() {
    let e = Config::parse(
        "[limits]\nmax_login_bytes = 1\nmax_line_bytes = 16\noutbound_queue_bytes = 33\n",
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("limits.outbound_queue_bytes"), "{e}");
    assert!(e.message.contains("the least allowed is 65"), "{e}");
    let e = Config::parse(
        "[limits]\nmax_line_bytes = 100\noutbound_queue_bytes = 1000\noutbound_queue_hard_bytes = 1000\n",
    )
    .unwrap_err();
    assert_eq!(
        e.key.as_deref(),
        Some("limits.outbound_queue_hard_bytes"),
        "{e}"
    );
}

#[test]
fn set_flags_apply_over_the_defaults_and_errors_name_the_flag() {
    let sets: Vec<Setting> = [
        "admin.listen=127.0.0.1:9100",
        "limits.max_line_bytes=4096",
        "log.level=debug",
    ]
    .iter()
    .map(|f| Setting::parse(f).unwrap())
    .collect();
    let c = Config::load_with(None, &sets).unwrap();
    assert_eq!(c.admin.listen, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(c.limits.max_line_bytes, 4096);
    assert_eq!(c.log.level, "debug");
    let bad = [Setting::parse("limits.max_line_bytes=-1").unwrap()];
    let e = Config::load_with(None, &bad).unwrap_err().to_string();
    assert!(
        e.contains("--set limits.max_line_bytes=-1") && e.contains("key `limits.max_line_bytes`"),
        "{e}"
    );
    let unknown = [Setting::parse("limits.max_lines=3").unwrap()];
    let e = Config::load_with(None, &unknown).unwrap_err().to_string();
    assert!(
        e.contains("--set limits.max_lines=3") && e.contains("unknown field"),
        "{e}"
    );
    assert!(Setting::parse("nodot=1").is_err());
    assert!(Setting::parse("limits.x").is_err());
}

#[test]
fn effective_settings_round_trip() {
    let c = Config::default();
    assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
}

#[test]
fn cluster_settings_that_cannot_work_are_refused_by_key() {
    let ok = Config::parse(
        "[cluster]\nredis = \"redis://127.0.0.1:6379/\"\nnode_id = \"n1\"\nlease = \"2s\"\n",
    )
    .unwrap();
    assert!(ok.cluster.enabled());
    assert_eq!(ok.cluster.lease, Duration::from_secs(2));
    for unix in [
        "unix:///run/redis/redis.sock",
        "redis+unix:///run/redis.sock?db=2",
    ] {
        let toml = format!("[cluster]\nredis = \"{unix}\"\n");
        let parsed = Config::parse(&toml);
        assert!(parsed.is_ok(), "{unix}: {:?}", parsed.err());
    }
    for (toml, key, says) in [
        (
            "redis = \"localhost:6379\"",
            "cluster.redis",
            "not a Redis URL",
        ),
        (
            "redis = \"redis+unix:///run/redis.sock\"\ntls_ca = \"/x\"",
            "cluster.tls_ca",
            "for a rediss:// URL",
        ),
        (
            "redis = \"unix:run/redis.sock\"",
            "cluster.redis",
            "not a Redis URL",
        ),
        (
            "redis = \"rediss://127.0.0.1:6379/\"",
            "cluster.tls_ca",
            "needs the CA",
        ),
        (
            "redis = \"rediss://127.0.0.1:6379/\"\ntls_ca = \"/nonexistent/ca.pem\"",
            "cluster.tls_ca",
            "/nonexistent/ca.pem",
        ),
        (
            "redis = \"rediss://127.0.0.1:6379/\"\ntls_ca = \"/x\"\ntls_cert = \"/y\"",
            "cluster.tls_key",
            "needs its key",
        ),
        (
            "redis = \"redis://127.0.0.1:6379/\"\ntls_ca = \"/x\"",
            "cluster.tls_ca",
            "for a rediss:// URL",
        ),
        (
            "redis = \"redis://h/\"\nnode_id = \"a b\"",
            "cluster.node_id",
            "letters",
        ),
        (
            "redis = \"redis://h/\"\nlease = \"500ms\"",
            "cluster.lease",
            "at least 1s",
        ),
        (
            "redis = \"redis://h/\"\nmax_logins_per_node = 0",
            "cluster.max_logins_per_node",
            "at least 1",
        ),
        (
            "redis = \"redis://h/\"\nmax_remote_logins = 0",
            "cluster.max_remote_logins",
            "at least 1",
        ),
    ] {
        let e = Config::parse(&format!("[cluster]\n{toml}\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{toml}: {e}");
        assert!(e.message.contains(says), "{toml}: {e}");
    }
    // Off: nothing is checked.
    assert!(Config::parse("[cluster]\nnode_id = \"a b\"\n").is_ok());
}

#[test]
fn operator_settings_that_cannot_work_are_refused() {
    let key = |text: &str| Config::parse(text).unwrap_err().key.unwrap();
    assert_eq!(
        key("[shutdown]\nlame_duck_duration = \"2h\"\n"),
        "shutdown.lame_duck_duration"
    );
    assert_eq!(
        key("[shutdown]\ndrain_delay = \"90m\"\n"),
        "shutdown.drain_delay"
    );
    assert_eq!(
        key("[server]\nconnects_window = \"0s\"\n"),
        "server.connects_window"
    );
    assert!(
        Config::parse("[server]\nconnects_per_address = 0\nconnects_window = \"0s\"\n").is_ok()
    );
    assert_eq!(key("[limits]\nmessage_burst = 3\n"), "limits.message_burst");
    assert!(Config::parse("[limits]\nmessages_per_second = 0\nmessage_burst = 3\n").is_ok());
    assert_eq!(
        key("[admin]\nopen_paths = [\"healthz\"]\n"),
        "admin.open_paths"
    );
}
