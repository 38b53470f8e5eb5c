//! The `a-chat` command line (ARCHITECTURE §2): parse the arguments and hand over to the
//! library: the daemon, the client, the probe, the configuration check, `passwd`, `reload`.

mod check;
mod cli;

use cli::{Cli, Command};
use std::process::ExitCode;

use clap::Parser;

use a_chat::daemon::ask::Asked;
use a_chat::{auth, client, daemon};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server {
            config,
            listen,
            sets,
        } => daemon::serve(daemon::Options {
            path: config,
            listen,
            sets,
        }),
        Command::Client { addr, tls, user } => {
            let login = match user.as_deref().map(client::credentials).transpose() {
                Ok(login) => login,
                Err(e) => {
                    eprintln!("a-chat: {e}");
                    return ExitCode::from(2);
                }
            };
            match client::run(addr, tls.options(), login) {
                Ok(client::Ended::Closed) => ExitCode::SUCCESS,
                Ok(client::Ended::AfterError) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("a-chat: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { path, quiet } => check::check_config(&path, quiet),
        Command::Passwd { name, file: None } => match auth::passwd::run(&name) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Passwd {
            name,
            file: Some(path),
        } => match auth::passwd::run_file(&name, &path) {
            Ok(done) => {
                eprintln!("a-chat: {done} (a running daemon uses it after SIGHUP)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Reload {
            config,
            admin,
            pid,
            timeout,
        } => match daemon::ask::reload(config.as_deref(), admin, pid, timeout) {
            Ok(Asked::Applied(applied)) => {
                println!("reloaded: applied {applied}");
                ExitCode::SUCCESS
            }
            Ok(Asked::Signalled(pid)) => {
                println!("sent SIGHUP to {pid}: the outcome is in its log (an [admin] listen lets `a-chat reload` report it)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("a-chat: reload: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { args } => bench(args),
        Command::Probe {
            addr,
            timeout,
            tls,
            user,
        } => {
            let user = match user.map(|u| client::credentials(&u).map(|line| (u, line))) {
                None => None,
                Some(Ok(user)) => Some(user),
                Some(Err(e)) => {
                    eprintln!("a-chat: {e}");
                    return ExitCode::from(2);
                }
            };
            match client::probe(&addr, timeout, tls.options(), user) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("a-chat: probe failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `a-chat bench ARGS`: runs `a-chat-bench ARGS` from beside this binary, with its exit
/// status (2, with one line, when it is not there).
fn bench(args: Vec<std::ffi::OsString>) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("a-chat-bench")));
    let Some(path) = beside.filter(|p| p.is_file()) else {
        eprintln!("a-chat: bench: the load generator a-chat-bench is not installed beside a-chat (cargo build --release builds both into target/release/)");
        return ExitCode::from(2);
    };
    match std::process::Command::new(&path).args(args).status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(e) => {
            eprintln!("a-chat: bench: cannot run {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}
