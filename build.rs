//! Build script: puts the commit a-chat is built from into `A_CHAT_COMMIT`, for
//! `a-chat --version`, the start-up line and `achat_build_info`, as NATS and Redis name
//! theirs. An `A_CHAT_COMMIT` in the build's environment wins (a container build has no
//! `.git`); without either, the commit is `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=A_CHAT_COMMIT");
    let commit = std::env::var("A_CHAT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=A_CHAT_COMMIT={}", commit.trim());
}

/// The short hash of HEAD, and the files whose change means a new HEAD (so the script runs
/// again after a commit or a checkout, and not otherwise).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(reference) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={reference}");
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        println!("cargo:rerun-if-changed={packed}");
    }
    Some(commit)
}
