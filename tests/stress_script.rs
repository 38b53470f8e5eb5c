//! deploy/stress.sh (ARCHITECTURE §7) as a test: the daemon under `ulimit -n 100` and
//! `wrk -c 1000` survives, does not spin, lets a new client in and carries a chat.
//! Runs the script's short mode against the binary under test; skipped (with a message)
//! when `wrk` is not installed (CI installs it).
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn stress_script_passes_in_its_short_mode() {
    let has_wrk = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("wrk").is_file()))
        .unwrap_or(false);
    if !has_wrk {
        eprintln!("skipped: wrk is not on PATH (deploy/stress.sh needs it)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stress.sh");
    let out_path = std::env::temp_dir().join(format!("a-chat-stress-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("bash")
        .arg(&script)
        .env("DURATION", "2s")
        .env("A_CHAT_BIN", env!("CARGO_BIN_EXE_a-chat"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run bash deploy/stress.sh");
    // The script bounds every step; this is the backstop.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    eprintln!("{output}");
    let status = status.expect("deploy/stress.sh did not finish within 120 s");
    assert!(
        status.success(),
        "deploy/stress.sh failed ({status}):\n{output}"
    );
    let verdict = output
        .lines()
        .find(|l| l.starts_with("stress: "))
        .expect("no verdict line");
    assert!(
        verdict.contains("survived=yes") && verdict.contains("chat=ok"),
        "{verdict}"
    );
}
