//! `a-chat check-config`: the configuration file checked the way the server checks it at
//! start (its TLS files and users file loaded too), its effective settings printed, and
//! what this machine says about them (the open-file limit, `net.core.somaxconn`).

use std::path::Path;
use std::process::ExitCode;

use a_chat::config::Config;
use a_chat::{auth, runtime, tls};

/// Descriptors kept beside the chat connections: listeners, admin connections, log
/// output, certificates and files read at reload.
pub const FD_HEADROOM: u64 = 64;

/// Checks the file at `path` as the server would; prints its effective settings unless
/// `quiet`. Exit 0 when the daemon can run it, 1 when not.
pub fn check_config(path: &Path, quiet: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("a-chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !config.tls.listen.is_empty() {
        if let Err(e) = tls::Server::load(&config.tls) {
            eprintln!("a-chat: invalid configuration in {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let users = if config.auth.users_file.is_empty() {
        None
    } else {
        match auth::Auth::load(&config.auth) {
            Ok(auth) => Some((auth.users().len(), auth.users().mixed_settings())),
            Err(e) => {
                eprintln!("a-chat: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    // What this machine says about the settings: notes on stdout with the settings, and
    // the ones that mean trouble also on stderr, with --quiet too (the unit runs
    // check-config --quiet before the daemon: its warnings reach the journal).
    let (notes, warnings) = environment_notes(&config);
    for warning in &warnings {
        eprintln!("a-chat: warning: {warning}");
    }
    if quiet {
        return ExitCode::SUCCESS;
    }
    println!("# {}: valid. Effective settings:", path.display());
    if let Some((users, mixed)) = users {
        println!("# {}: {users} users may log in", config.auth.users_file);
        if let Some(mixed) = mixed {
            println!("# warning: {mixed}");
        }
    }
    for credential in &config.credentials {
        println!(
            "# {}: systemd credential {:?} (LoadCredential=)",
            credential.key, credential.name
        );
    }
    if !config.cluster.redis_password_file.is_empty() {
        println!("# cluster.redis_password_file: the Redis password is read from it (not shown)");
    }
    print!("{}", config.to_toml());
    for note in notes.iter().chain(&warnings) {
        println!("# {note}");
    }
    ExitCode::SUCCESS
}

/// What the kernel here says about `listen_backlog` and `max_connections`: notes that are
/// fine, and warnings for settings that will not work as written on this machine.
fn environment_notes(config: &Config) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    let backlog = config.server.listen_backlog;
    match runtime::somaxconn() {
        Some(cap) if cap < backlog => warnings.push(format!(
            "net.core.somaxconn here: {cap}; listen_backlog = {backlog}: capped at {cap} by the kernel (raise net.core.somaxconn)"
        )),
        Some(cap) => notes.push(format!(
            "net.core.somaxconn here: {cap}; listen_backlog = {backlog}: ok"
        )),
        None => warnings.push(format!(
            "net.core.somaxconn could not be read (/proc/sys is hidden here, e.g. by the unit's ProcSubset=pid): the kernel may cap listen_backlog = {backlog} below what it says"
        )),
    }
    if let Some(limit) = open_file_limit() {
        let max = config.server.max_connections as u64;
        let line = |note: &str| {
            format!("open-file limit (ulimit -n) here: {limit}; max_connections = {max}: {note}")
        };
        if max > limit {
            warnings.push(line(
                "exceeds the limit: accepts will fail with EMFILE long before the token cap is reached",
            ));
        } else if max + FD_HEADROOM > limit {
            warnings.push(line(
                "too close: accepts will fail with EMFILE before the token cap is reached",
            ));
        } else {
            notes.push(line("ok"));
        }
    }
    (notes, warnings)
}

/// The soft open-file limit (RLIMIT_NOFILE) of this process, when it has one.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}
