//! `a-chat bench ARGS` runs the load generator, `a-chat-bench`, from beside the `a-chat`
//! binary (a crate and a binary of its own since 0.1: the daemon does not carry it).
mod common;

use std::path::Path;

use common::run_cli_within;

#[test]
fn a_chat_bench_runs_the_load_generator_beside_it() {
    let beside = common::bin().with_file_name("a-chat-bench");
    let (status, out, err) = run_cli_within(&["bench", "--version"]);
    if Path::new(&beside).is_file() {
        // Built by the same `cargo test` of the workspace: its version, its exit status.
        assert!(status.success(), "{out} {err}");
        assert!(out.starts_with("a-chat-bench "), "{out}");
        let (status, _, err) = run_cli_within(&["bench", "--no-such-flag"]);
        assert_eq!(status.code(), Some(2), "{err}");
    } else {
        // Alone (cargo test -p a-chat): one line that says what is missing, exit 2.
        assert_eq!(status.code(), Some(2), "{out} {err}");
        assert!(
            err.contains("a-chat-bench is not installed beside a-chat"),
            "{err}"
        );
    }
}
