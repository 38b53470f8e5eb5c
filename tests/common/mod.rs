//! Test harness: starts the real `a-chat` binary on an ephemeral port with a config file
//! written by the test, and talks to it over TCP like a user. Every wait has a timeout,
//! so a bug fails the test instead of hanging CI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_a-chat"))
}

/// A running daemon. Killed on drop if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    /// The chat address it listens on.
    pub addr: SocketAddr,
    /// Every stderr line so far (log output).
    pub log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Options for starting a daemon.
#[derive(Default, Clone)]
pub struct Start {
    /// Extra TOML appended to the generated config (which sets `[server] listen` to port 0
    /// unless `listen` is given here).
    pub toml: String,
    /// Environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Open-file limit (RLIMIT_NOFILE) for the daemon, set with `prlimit`.
    pub nofile: Option<u64>,
}

impl Daemon {
    /// Starts a daemon with default settings on an ephemeral port.
    pub fn start() -> Daemon {
        Daemon::start_with(Start::default())
    }

    /// Starts a daemon with `toml` added to its config file.
    pub fn with_toml(toml: &str) -> Daemon {
        Daemon::start_with(Start {
            toml: toml.to_owned(),
            ..Start::default()
        })
    }

    pub fn start_with(opts: Start) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("a-chat.toml");
        let mut toml = opts.toml.clone();
        if !toml.contains("[server]") {
            toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n{toml}");
        } else if !toml.contains("listen") {
            toml = toml.replacen("[server]", "[server]\nlisten = \"127.0.0.1:0\"", 1);
        }
        std::fs::write(&config_path, &toml).expect("write config");
        let mut cmd = match opts.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("server")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .envs(opts.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start a-chat");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            lines,
            _dir: dir,
            config_path,
        };
        let line = daemon
            .wait_log(|l| l.contains("listening on "))
            .expect("the daemon did not report its listening address");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        daemon.addr = addr;
        daemon
    }

    /// Waits (up to WAIT) for a log line matching `pred`, returning it.
    pub fn wait_log(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_log_for(WAIT, pred)
    }

    pub fn wait_log_for(&mut self, wait: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        // Lines already seen count too.
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| pred(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. libc::SIGINT) to the daemon.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits for the daemon to exit, up to `wait`; `None` if it is still running.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the daemon in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// User + system CPU time the daemon has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Connects a client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects and logs in as `name`, and confirms the login is live by a message to self.
    pub fn login(&self, name: &str) -> Client {
        let mut c = self.connect();
        c.send(name);
        c.send(&format!("{name}: ready?"));
        c.expect(&format!("from {name}: ready?"));
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A chat client over a blocking socket; every read has a timeout.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next line without its `\n`; `None` at end of stream. Panics after WAIT.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                }
                Some(line)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// Asserts that the next line is `expected`.
    pub fn expect(&mut self, expected: &str) {
        let got = self.line();
        assert_eq!(got.as_deref(), Some(expected));
    }

    /// Asserts that the server closes the connection next (end of stream or reset).
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected the end, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }
}

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
