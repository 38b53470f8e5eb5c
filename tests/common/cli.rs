//! Running `a-chat` subcommands the way a user would, with their exit status and output.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{bin, WAIT};

/// Runs `a-chat` with `args` and returns (status, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run a-chat");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `a-chat` with `args`, writing `stdin` to it and then closing its stdin, and returns
/// (status, stdout, stderr). Panics (after killing it) if it has not exited within WAIT:
/// for commands that must not keep running, such as a server with a bad config.
pub fn run_cli_input(args: &[&str], stdin: &[u8]) -> (ExitStatus, String, String) {
    run_cli_env(args, &[], stdin)
}

/// [`run_cli_input`] with environment variables.
pub fn run_cli_env(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (ExitStatus, String, String) {
    run_program(Command::new(bin()), args, env, stdin)
}

/// Runs `program` as [`run_cli_env`] runs `a-chat`.
fn run_program(
    mut program: Command,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &[u8],
) -> (ExitStatus, String, String) {
    let mut child = program
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a-chat");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a-chat {args:?} still running after {WAIT:?}; stderr: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Runs the program at `path` with `args` and an empty stdin, as [`run_cli_within`] runs
/// `a-chat`.
pub fn run_within(path: &str, args: &[&str]) -> (ExitStatus, String, String) {
    run_program(Command::new(path), args, &[], b"")
}

/// [`run_cli_input`] with an empty stdin.
pub fn run_cli_within(args: &[&str]) -> (ExitStatus, String, String) {
    run_cli_input(args, b"")
}
