//! What a reload would change: the differences between the configuration in force and
//! the file, each applied at once or left until a restart.

use crate::config::Config;

/// One difference between the configuration in force and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Applied at once.
    Live(&'static str),
    /// Needs a restart: ignored until then.
    Restart(&'static str),
}

/// What differs between `old` and `new`, section by section.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = server(old, new);
    let mut check = |changed: bool, change: Change| {
        if changed {
            changes.push(change);
        }
    };
    check(old.limits != new.limits, Change::Live("limits"));
    let (os, ns) = (&old.shutdown, &new.shutdown);
    check(
        os.drain_timeout != ns.drain_timeout,
        Change::Restart("shutdown.drain_timeout"),
    );
    check(
        (os.drain_delay, os.lame_duck_duration) != (ns.drain_delay, ns.lame_duck_duration),
        Change::Restart("shutdown lame duck timing"),
    );
    check(old.cluster != new.cluster, Change::Restart("cluster"));
    check(old.log.level != new.log.level, Change::Live("log.level"));
    check(
        old.log.format != new.log.format,
        Change::Restart("log.format"),
    );
    check(
        old.admin.listen != new.admin.listen,
        Change::Restart("admin.listen"),
    );
    let admin_tls = |c: &Config| {
        let a = &c.admin;
        (
            a.tls_cert.clone(),
            a.tls_key.clone(),
            a.tls_client_ca.clone(),
        )
    };
    check(
        admin_tls(old) != admin_tls(new),
        Change::Restart("admin TLS files"),
    );

    check(
        old.tls.listen != new.tls.listen,
        Change::Restart("tls.listen"),
    );
    let websocket = |c: &Config| {
        let w = &c.websocket;
        (
            w.listen.clone(),
            w.tls_listen.clone(),
            w.allowed_origins.clone(),
        )
    };
    check(
        websocket(old) != websocket(new),
        Change::Restart("websocket"),
    );
    check(
        old.tls.client_identity != new.tls.client_identity,
        Change::Restart("tls.client_identity"),
    );
    let (ot, nt) = (&old.tls, &new.tls);
    check(
        (&ot.cert, &ot.key, &ot.client_ca) != (&nt.cert, &nt.key, &nt.client_ca),
        Change::Live("tls files"),
    );
    let admin_rules = |c: &Config| (c.admin.tokens_file.clone(), c.admin.open_paths.clone());
    if new.admin.listen.is_some()
        && (!new.admin.tokens_file.is_empty() || admin_rules(old) != admin_rules(new))
    {
        // Re-read at every reload, as the users file is: tokens are added and revoked
        // without a change of the file's name.
        check(true, Change::Live("admin tokens"));
    }
    let (oa, na) = (&old.auth, &new.auth);
    if oa.users_file.is_empty() != na.users_file.is_empty() {
        // Turning authentication on or off changes what every first line means.
        changes.push(Change::Restart("auth.users_file"));
    } else if !na.users_file.is_empty() {
        // The users file is re-read at every reload (users come and go without a change
        // of its name).
        changes.push(Change::Live("auth users"));
    }
    if oa.max_failures_per_ip != na.max_failures_per_ip {
        changes.push(Change::Live("auth.max_failures_per_ip"));
    }
    changes
}

/// What differs in `[server]`: every key of it needs a restart.
fn server(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut check = |changed: bool, change: Change| {
        if changed {
            changes.push(change);
        }
    };
    let (o, n) = (&old.server, &new.server);
    check(o.listen != n.listen, Change::Restart("server.listen"));
    check(
        o.max_connections != n.max_connections,
        Change::Restart("server.max_connections"),
    );
    check(
        o.max_connections_per_ip != n.max_connections_per_ip,
        Change::Restart("server.max_connections_per_ip"),
    );
    check(
        o.accept_error_sleep != n.accept_error_sleep,
        Change::Restart("server.accept_error_sleep"),
    );
    check(
        o.listen_backlog != n.listen_backlog,
        Change::Restart("server.listen_backlog"),
    );
    check(
        o.worker_threads != n.worker_threads,
        Change::Restart("server.worker_threads"),
    );
    check(
        o.at_capacity != n.at_capacity,
        Change::Restart("server.at_capacity"),
    );
    check(
        o.proxy_protocol_from != n.proxy_protocol_from,
        Change::Restart("server.proxy_protocol_from"),
    );
    check(
        (o.connects_per_address, o.connects_window) != (n.connects_per_address, n.connects_window)
            || o.connects_exempt != n.connects_exempt,
        Change::Restart("server.connects_*"),
    );
    changes
}
