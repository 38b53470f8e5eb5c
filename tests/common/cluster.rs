//! A cluster for tests (ARCHITECTURE §10): a `redis-server` of the test's own and a-chat nodes
//! joined to it, on loopback ports.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::http::{http_get, sample, scrape};
use super::{free_addr, Client, Daemon, WAIT};

/// Several processes each: one test at a time on a small machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `redis-server` of the test's own, with nothing saved to disk.
pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// With TLS only (no plain port): its certificate, key, and the CA it checks clients
    /// against.
    tls: Option<[String; 3]>,
    /// Also listening on a unix socket here, the URL nodes are given (the TCP port stays
    /// for the test's own commands).
    unix: Option<(tempfile::TempDir, std::path::PathBuf)>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            addr: free_addr(),
            child: None,
            tls: None,
            unix: None,
        };
        redis.restart();
        redis
    }

    /// A Redis that speaks only TLS, with `pki`'s server certificate, and asks clients for
    /// a certificate from `pki`'s CA (Redis's default, `tls-auth-clients yes`).
    pub fn start_tls(pki: &super::Pki) -> Redis {
        let mut redis = Redis {
            addr: free_addr(),
            child: None,
            tls: Some([
                pki.path("server.pem"),
                pki.path("server.key"),
                pki.path("ca.pem"),
            ]),
            unix: None,
        };
        redis.restart();
        redis
    }

    /// A Redis that nodes reach on a unix socket in a directory of its own.
    pub fn start_unix() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redis.sock");
        let mut redis = Redis {
            addr: free_addr(),
            child: None,
            tls: None,
            unix: Some((dir, path)),
        };
        redis.restart();
        redis
    }

    /// The URL nodes reach it at.
    pub fn url(&self) -> String {
        if let Some((_, path)) = &self.unix {
            return format!("unix://{}", path.display());
        }
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/", self.addr)
    }

    /// Starts it (again) on the same port, and waits until it accepts connections.
    pub fn restart(&mut self) {
        let port = self.addr.port().to_string();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => command.args(["--port", &port]),
            Some([cert, key, ca]) => command.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-ca-cert-file",
                ca,
            ]),
        };
        if let Some((_, path)) = &self.unix {
            let path = path.to_str().expect("a UTF-8 temp path");
            command.args(["--unixsocket", path, "--unixsocketperm", "700"]);
        }
        let child = command
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        let listening = |redis: &Redis| {
            let unix_ok = match &redis.unix {
                Some((_, path)) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                None => true,
            };
            unix_ok && TcpStream::connect_timeout(&redis.addr, Duration::from_millis(200)).is_ok()
        };
        while !listening(self) {
            assert!(Instant::now() < deadline, "redis-server never listened");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command (RESP) and returns its reply's first line.
    pub fn command(&self, args: &[&[u8]]) -> String {
        self.reply(args, false)
    }

    /// Runs one command (RESP) whose reply is a bulk string, and returns the string.
    pub fn bulk(&self, args: &[&[u8]]) -> String {
        self.reply(args, true)
    }

    fn reply(&self, args: &[&[u8]], bulk: bool) -> String {
        use std::io::{BufRead, BufReader, Write};
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let stream = TcpStream::connect(self.addr).expect("connect to redis");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        (&stream).write_all(&out).unwrap();
        let mut reader = BufReader::new(&stream);
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply = reply.trim_end().to_owned();
        if !bulk {
            return reply;
        }
        let len: usize = match reply.strip_prefix('$').map(str::parse) {
            Some(Ok(len)) => len,
            _ => panic!("not a bulk string: {reply}"),
        };
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        body.truncate(len);
        String::from_utf8(body).expect("a UTF-8 reply")
    }

    /// Registers `node` with a lease far in the future: a live node that exists only in
    /// Redis, whose logins a test writes straight into the registry.
    pub fn live_node(&self, node: &str) {
        let far = b"99999999999999";
        let added = self.command(&[b"ZADD", b"achat:nodes", far, node.as_bytes()]);
        assert_eq!(added, ":1", "{node} registered anew");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of the cluster, joined.
pub struct Node {
    pub daemon: Daemon,
    pub admin: SocketAddr,
}

pub fn node(redis: &Redis, id: &str, lease: &str) -> Node {
    node_with(redis, id, lease, "")
}

/// A node with `extra` TOML in its config: keys of `[cluster]` first, then other sections.
pub fn node_with(redis: &Redis, id: &str, lease: &str, extra: &str) -> Node {
    let daemon = node_at(&redis.url(), id, lease, extra);
    joined(daemon, id)
}

/// A node started with `redis = "{url}"`, not waited for.
pub fn node_at(url: &str, id: &str, lease: &str, extra: &str) -> Daemon {
    Daemon::with_toml(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ndrain_timeout = \"5s\"\n\
         [cluster]\nredis = \"{url}\"\nnode_id = \"{id}\"\nlease = \"{lease}\"\n{extra}"
    ))
}

/// `daemon`, once it has joined the cluster.
pub fn joined(mut daemon: Daemon, id: &str) -> Node {
    daemon
        .wait_log(|l| l.contains("joined the cluster"))
        .unwrap_or_else(|| panic!("{id} did not join:\n{}", daemon.log_text()));
    let admin = daemon.admin_addr();
    Node { daemon, admin }
}

impl Node {
    pub fn metric(&self, name: &str) -> f64 {
        sample(&scrape(self.admin), name)
    }

    /// Waits until this node knows `n` logins on other nodes.
    pub fn wait_remote(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.metric("achat_cluster_remote_logins") as usize != n {
            assert!(Instant::now() < deadline, "never saw {n} remote logins");
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn ready(&self) -> u16 {
        http_get(self.admin, "/readyz").status
    }

    pub fn wait_ready(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ready() != status {
            assert!(Instant::now() < deadline, "/readyz never said {status}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Logs in as `name` and proves it with a message to self; the error line otherwise.
pub fn try_login(addr: SocketAddr, name: &str) -> Result<Client, String> {
    let mut c = Client::connect(addr);
    c.send(name);
    c.send(&format!("{name}: ready?"));
    match c.line() {
        Some(l) if l == format!("from {name}: ready?") => Ok(c),
        other => Err(other.unwrap_or_else(|| "closed".into())),
    }
}

pub fn login(node: &Node, name: &str) -> Client {
    try_login(node.daemon.addr, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}
