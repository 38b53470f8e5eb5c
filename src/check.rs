//! `a-chat check-config`: the configuration file checked the way the server checks it at
//! start (the same [`Preflight`]: its TLS files and users file loaded too), its effective
//! settings printed, and what this machine says about them.

use std::path::Path;
use std::process::ExitCode;

use a_chat::config::Config;
use a_chat::daemon::preflight::Preflight;

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
    let found = match Preflight::run(&config, false) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("a-chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Warnings also on stderr, with --quiet too (the unit runs check-config --quiet
    // before the daemon: its warnings reach the journal).
    for warning in &found.warnings {
        eprintln!("a-chat: warning: {warning}");
    }
    if quiet {
        return ExitCode::SUCCESS;
    }
    println!("# {}: valid. Effective settings:", path.display());
    if let Some(auth) = &found.auth {
        let users = auth.users().len();
        println!("# {}: {users} users may log in", config.auth.users_file);
        if let Some(mixed) = &found.mixed_hashes {
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
    for note in found.notes.iter().chain(&found.warnings) {
        println!("# {note}");
    }
    ExitCode::SUCCESS
}
