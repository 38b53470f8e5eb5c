//! Test harness: starts the real `a-chat` binary on an ephemeral port with a config file
//! written by the test, and talks to it over TCP like a user. Every wait has a timeout,
//! so a bug fails the test instead of hanging CI.
#![allow(dead_code)]

pub mod cluster;
pub mod flood;
pub mod http;
pub mod pki;
pub mod tlsclient;
pub mod users;

#[allow(unused_imports)]
pub use flood::{flood_until, ping_pong, warm_up, Flood, RoundTrips, RssWatch};
#[allow(unused_imports)] // each test binary uses some of them
pub use http::{http_get, http_raw, read_http_response, sample, scrape, HttpResponse};
#[allow(unused_imports)]
pub use pki::Pki;

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

/// A chat client over a blocking socket; every read has a timeout.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        Client::from_stream(stream)
    }

    /// Connects with the socket's receive buffer set to `bytes` before the handshake, so
    /// that a client which does not read leaves the daemon's writes blocked after little
    /// data (loopback receive buffers otherwise grow to tens of MB).
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: i32) -> Client {
        Client::from_stream(connect_with_rcvbuf(addr, bytes).expect("connect"))
    }

    /// Wraps a connected socket, with the harness's timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
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

    /// Splits the client into its writing half and its (buffered) reading half, for tests
    /// that read on another thread while they send.
    pub fn split(self) -> (TcpStream, BufReader<TcpStream>) {
        (self.stream, self.reader)
    }

    /// The next line if one arrives within `t` (`Some(None)` at end of stream), `None` if
    /// nothing arrives in that time: a bounded negative check. The read timeout is
    /// restored to WAIT afterwards.
    pub fn line_within(&mut self, t: Duration) -> Option<Option<String>> {
        self.set_read_timeout(t);
        let mut line = String::new();
        let got = match self.reader.read_line(&mut line) {
            Ok(0) => Some(None),
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                }
                Some(Some(line))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(None),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                assert!(line.is_empty(), "a partial line arrived: {line:?}");
                None
            }
            Err(e) => panic!("reading a line: {e}"),
        };
        self.set_read_timeout(WAIT);
        got
    }

    /// Reads everything until the server closes (end of stream or reset), up to WAIT.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("expected the connection to close: {e}"),
            }
        }
    }
}

/// Connects a blocking socket whose SO_RCVBUF is set before `connect`, so the window the
/// client advertises stays small.
pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: i32) -> std::io::Result<TcpStream> {
    connect_v4(addr, Some(bytes), None)
}

/// Connects from the loopback address `source` (e.g. 127.0.0.2), so the daemon sees
/// another client address than 127.0.0.1.
pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    connect_v4(addr, None, Some(source))
}

/// A blocking IPv4 connect, with SO_RCVBUF set and the source address bound first when
/// asked.
fn connect_v4(
    addr: SocketAddr,
    rcvbuf: Option<i32>,
    source: Option<std::net::Ipv4Addr>,
) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_v4 supports IPv4 only, got {addr}")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the descriptor is
    // handed to a TcpStream (which closes it) right after it is created.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(size) = rcvbuf {
            let r = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(ip) = source {
            let from = sockaddr(ip, 0);
            let r = libc::bind(
                fd,
                &from as *const libc::sockaddr_in as *const libc::sockaddr,
                len,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let to = sockaddr(*v4.ip(), v4.port());
        let r = libc::connect(
            fd,
            &to as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
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
    let mut child = Command::new(bin())
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

/// [`run_cli_input`] with an empty stdin.
pub fn run_cli_within(args: &[&str]) -> (ExitStatus, String, String) {
    run_cli_input(args, b"")
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
}
