//! How each client reaches a server and logs in, the same for every workload
//! ([`Access`]): the target protocol, the server addresses, the source
//! addresses, TLS, and the login names and password; and how these are taken
//! from the command line and checked.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::args::BenchArgs;
pub use super::args::Target;
use super::link::TlsSetup;
use super::{spread, wire};

/// How each client connects and logs in.
#[derive(Debug)]
pub struct Access {
    /// Which protocol the clients speak: a-chat lines or Redis pub/sub.
    pub target: Target,
    /// The servers; client i connects to `addrs[i % addrs.len()]`.
    pub addrs: Vec<SocketAddr>,
    /// Client i logs in as `prefix` followed by i.
    pub prefix: String,
    /// Spread connections over 127.0.0.1..=127.0.0.N by binding first (0: don't).
    pub source_ips: u32,
    /// How long one connect may take (and, per workload, the logins after it).
    pub connect_timeout: Duration,
    /// `--tls`: every connection makes a TLS handshake first.
    pub tls: Option<Arc<TlsSetup>>,
    /// `--password`: logins are `NAME PASSWORD`.
    pub password: Option<String>,
    /// `--transport ws`: every connection is a WebSocket session (a-chat's `[websocket]`).
    pub websocket: bool,
}

impl Access {
    /// The access to `addrs` with the login `prefix` and `source_ips`, both
    /// checked already; sets up TLS if `--tls` asks for it.
    pub fn new(
        args: &BenchArgs,
        addrs: Vec<SocketAddr>,
        prefix: String,
        source_ips: u32,
    ) -> Result<Self, String> {
        Ok(Access {
            target: args.target,
            prefix,
            source_ips,
            connect_timeout: args.connect_timeout,
            tls: args.tls_setup(&addrs)?,
            addrs,
            password: args.password.clone(),
            websocket: args.transport == super::args::Transport::Ws,
        })
    }

    /// The login (or Redis channel) of client `i`.
    pub fn name(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i)
    }

    /// The server client `client` connects to.
    pub fn addr_of(&self, client: usize) -> SocketAddr {
        self.addrs[spread::node_of(client, self.addrs.len())]
    }

    /// The source address the `conn_no`-th connection binds to, if it binds.
    pub fn source(&self, conn_no: usize) -> Option<Ipv4Addr> {
        (self.source_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (conn_no % self.source_ips as usize) as u8))
    }

    /// What a connection that logs in as `name` sends first: the a-chat login
    /// (and its confirmation request), or the Redis SUBSCRIBE to its channel.
    pub fn hello(&self, name: &str) -> String {
        match self.target {
            Target::Achat => wire::achat_hello(name, self.password.as_deref()),
            Target::Redis => format!("SUBSCRIBE {name}\r\n"),
            // The PONG to the PING after SUB says the subscription is in place.
            Target::Nats => format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {name} 1\r\nPING\r\n"
            ),
        }
    }
}

/// The server addresses: every `--addr`, or the target's default; loopback only,
/// and one for Redis.
pub fn target_addrs(args: &BenchArgs) -> Result<Vec<SocketAddr>, String> {
    if args.target != Target::Achat && args.addr.len() > 1 {
        return Err(format!(
            "--target {} takes one --addr, not {}: the comparison runs against one server",
            args.target.label(),
            args.addr.len()
        ));
    }
    let addrs = if args.addr.is_empty() {
        vec![match args.target {
            Target::Achat => "127.0.0.1:8080".parse().unwrap(),
            Target::Redis => "127.0.0.1:6379".parse().unwrap(),
            Target::Nats => "127.0.0.1:4222".parse().unwrap(),
        }]
    } else {
        args.addr.clone()
    };
    if let Some(addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{addr} is not a loopback address: the bench only targets 127.0.0.0/8 or ::1"
        ));
    }
    Ok(addrs)
}

/// The login prefix (`--prefix` or `b<pid>-`), checked against the longest
/// login it makes for `clients` clients.
pub fn login_prefix(args: &BenchArgs, clients: usize) -> Result<String, String> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("b{}-", std::process::id()));
    let longest = format!("{prefix}{}", clients.saturating_sub(1));
    if prefix.is_empty()
        || longest.len() > 64
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == ',')
    {
        return Err(format!(
            "--prefix {prefix:?}: logins must be 1..=64 bytes without whitespace, ':' or ','"
        ));
    }
    Ok(prefix)
}

/// How many 127.0.0.x source addresses to spread over: `--source-ips`, or
/// with `spread` connections one address per 4000 of them (IPv4 only), or 0.
pub fn source_ips(
    args: &BenchArgs,
    addrs: &[SocketAddr],
    spread: Option<usize>,
) -> Result<u32, String> {
    let v4 = addrs.iter().all(SocketAddr::is_ipv4);
    Ok(match (args.source_ips, v4, spread) {
        (Some(_), false, _) => {
            return Err("--source-ips needs IPv4 loopback addresses (--addr)".into())
        }
        (Some(n), _, _) => n,
        (None, true, Some(conns)) => conns.div_ceil(4000).clamp(1, 254) as u32,
        (None, _, _) => 0,
    })
}
