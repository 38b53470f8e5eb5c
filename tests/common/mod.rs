//! Test harness: starts the real `a-chat` binary on an ephemeral port with a config file
//! written by the test, and talks to it over TCP like a user. Every wait has a timeout,
//! so a bug fails the test instead of hanging CI.
#![allow(dead_code)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod flood;
pub mod http;
pub mod pki;
pub mod tlsclient;
pub mod users;
pub mod webdriver;
pub mod ws;

#[allow(unused_imports)]
pub use cli::{run_cli, run_cli_env, run_cli_input, run_cli_within};
#[allow(unused_imports)]
pub use client::{connect_from, connect_with_rcvbuf, Client};
#[allow(unused_imports)]
pub use flood::{flood_until, ping_pong, warm_up, Flood, RoundTrips, RssWatch};
#[allow(unused_imports)] // each test binary uses some of them
pub use http::{
    assert_samples, http_get, http_raw, read_http_response, sample, scrape, scrape_until,
    scrape_with, HttpResponse,
};
#[allow(unused_imports)]
pub use pki::Pki;

use std::io::{BufRead, BufReader};
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
    match option_env!("CARGO_BIN_EXE_a-chat") {
        Some(path) => PathBuf::from(path),
        // A test of the load generator's package (bench/): the daemon is built beside it
        // by the same `cargo test` of the workspace.
        None => {
            let exe = std::env::current_exe().expect("the test's path");
            let dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target dir");
            dir.join("a-chat")
        }
    }
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
        let mut daemon = Daemon::launch(&opts, None, &[]);
        daemon.wait_listening();
        daemon
    }

    /// Starts a daemon listening on `addr` (see [`free_addr`]) and waits until that address
    /// accepts connections, without reading the log: for configs whose log level hides
    /// the `listening on` line. The readiness check costs one connection that closes at once.
    pub fn start_on(opts: Start, addr: SocketAddr) -> Daemon {
        let mut daemon = Daemon::launch(&opts, Some(addr), &[]);
        daemon.addr = addr;
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!("the daemon exited with {status}:\n{}", daemon.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{addr} never accepted a connection"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `a-chat server` with exactly `args` after `server` (no generated config unless
    /// `opts.toml` is non-empty, in which case `--config FILE` comes first), and waits for
    /// its `listening on` line.
    pub fn start_args(opts: Start, args: &[&str]) -> Daemon {
        let mut daemon = Daemon::launch(&opts, None, args);
        daemon.wait_listening();
        daemon
    }

    /// Spawns the daemon. With `args` empty, a config is generated as described on
    /// [`Start::toml`], listening on `addr` or port 0; with `args`, the config file holds
    /// `opts.toml` verbatim and is passed only when that is non-empty.
    fn launch(opts: &Start, addr: Option<SocketAddr>, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("a-chat.toml");
        let mut toml = opts.toml.clone();
        let listen = addr.map_or("127.0.0.1:0".to_owned(), |a| a.to_string());
        if args.is_empty() {
            if !toml.contains("[server]") {
                toml = format!("[server]\nlisten = \"{listen}\"\n{toml}");
            } else if !toml.contains("listen") {
                toml = toml.replacen("[server]", &format!("[server]\nlisten = \"{listen}\""), 1);
            }
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
        cmd.arg("server");
        if args.is_empty() || !opts.toml.is_empty() {
            cmd.arg("--config").arg(&config_path);
        }
        // Tests send as fast as they can: the per-client message rate is off unless a
        // test sets it (tests/rate.rs tests it on, at its defaults too).
        if args.is_empty() && !opts.toml.contains("messages_per_second") {
            cmd.arg("--set").arg("limits.messages_per_second=0");
        }
        cmd.args(args)
            .env_remove("RUST_LOG")
            // The daemon's thread count comes from its config unless a test says otherwise.
            .env_remove("ASYNC_STD_THREAD_COUNT")
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
        Daemon {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            lines,
            _dir: dir,
            config_path,
        }
    }

    /// Waits for the `listening on IP:PORT` line and takes the address from it.
    fn wait_listening(&mut self) {
        let line = self
            .wait_log(|l| l.contains("listening on "))
            .unwrap_or_else(|| {
                panic!(
                    "the daemon did not report its listening address; log:\n{}",
                    self.log_text()
                )
            });
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        self.addr = addr;
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

    /// The admin endpoint's address, from its `admin listening on ADDR` log line (the
    /// config must set `[admin] listen`, e.g. to "127.0.0.1:0").
    pub fn admin_addr(&mut self) -> SocketAddr {
        let line = self
            .wait_log(|l| l.contains("admin listening on "))
            .expect("the daemon did not report its admin address");
        line.split("admin listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Connects a client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Logs in as `name` on a socket with a small receive buffer (see
    /// [`Client::connect_small_rcvbuf`]): the way to make a client that does not read.
    pub fn login_small_rcvbuf(&self, name: &str, bytes: i32) -> Client {
        let mut c = Client::connect_small_rcvbuf(self.addr, bytes);
        c.send(name);
        c.send(&format!("{name}: ready?"));
        c.expect(&format!("from {name}: ready?"));
        c
    }

    /// Waits for the drain's summary line (`drain finished ...`) and returns it.
    pub fn summary(&mut self) -> String {
        self.wait_log(|l| l.contains("drain finished"))
            .unwrap_or_else(|| panic!("no summary line; log:\n{}", self.log_text()))
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

/// The value of `key=` in a log line of `key=value` fields (e.g. the drain's summary).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    line[at..].split_whitespace().next()
}

/// Like [`log_field`], parsed as a number; panics with the line if absent.
pub fn log_number(line: &str, key: &str) -> u64 {
    log_field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

/// An address on 127.0.0.1 whose port was free a moment ago (bound, then released).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap()
}

/// Raises this process's open-file limit to its hard limit (the clients of a test that
/// holds many connections need two descriptors each).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// The kernel's count of connections dropped because a listen queue was full
/// (TcpExtListenOverflows in /proc/net/netstat), where it can be read.
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let at = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(at)?.parse().ok();
    }
    None
}

impl Daemon {
    /// The TLS chat address, from its `listening on ADDR (tls)` log line.
    pub fn tls_addr(&mut self) -> SocketAddr {
        let line = self
            .wait_log(|l| l.contains("listening on ") && l.contains("(tls)"))
            .unwrap_or_else(|| panic!("no TLS listener; log:\n{}", self.log_text()));
        line.split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Once the daemon has counted an accepted connection (one a test left half-opened),
    /// SIGTERM: asserts that it exits 0 within 10 s. A drain that waited for a connection
    /// still opening would take its whole `login_timeout` (the tests set 30 s).
    pub fn drains_past_an_opening(&mut self) {
        let admin = self.admin_addr();
        scrape_until(admin, |s| {
            sample(s, "achat_connections_accepted_total") >= 1.0
        });
        let started = std::time::Instant::now();
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(20))
            .expect("the daemon exits");
        assert!(status.success(), "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
