//! What a run does, fixed before any worker starts: how clients reach the
//! servers (`access`), the load shape, the clients and their recipients
//! ([`Plan`]); how it is built from the command line and checked, and the
//! warnings and descriptor limits it implies. Spreading over several addresses
//! is in `spread`.

use super::access::{login_prefix, source_ips, target_addrs, Access};
pub use super::args::Target;
use super::args::{BenchArgs, Workload};
use super::spread::{self, Route};
use super::{payload, sys};

#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Closed loop: each client keeps at most `inflight` messages unacknowledged.
    Closed { inflight: u64 },
    /// Open loop: each client sends on a fixed schedule, one message per interval.
    Open { interval_ns: f64 },
    /// Log in and hold the connections; send nothing.
    Idle,
}

/// What the run does; fixed before the workers start.
#[derive(Debug)]
pub struct Plan {
    /// How each client connects and logs in.
    pub access: Access,
    /// How fast clients send: a window of unacknowledged messages, a schedule, or not at all.
    pub load: Load,
    /// How many clients log in; each is one connection (two against Redis when it
    /// sends: a subscriber and a publisher).
    pub clients: usize,
    /// `--clients` (or the workload's count) before it was rounded up to a multiple
    /// of the addresses, for the report to say so.
    pub requested_clients: usize,
    /// Recipients of each message: every delivery is checked at each of them.
    pub fanout: usize,
    /// Whom each client's messages go to (the next `fanout` clients, or with
    /// `--cross-node` the next ones on other nodes).
    pub route: Route,
    /// Bytes of each payload, header included.
    pub size: usize,
    /// `--messages`: each client stops after this many, and the run once all have.
    pub messages: Option<u64>,
    /// Of the planned deliveries, the share whose sender and recipient use different
    /// addresses (0 with one address).
    pub cross_share: f64,
    /// Worker threads; client i belongs to worker i mod `threads`.
    pub threads: usize,
}

impl Plan {
    /// The `fanout` recipients of every message of client `i`.
    pub fn recipients(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.route.recipients(i, self.clients)
    }

    pub fn owner(&self, client: usize) -> usize {
        client % self.threads
    }
}

pub fn build_plan(args: &BenchArgs) -> Result<Plan, String> {
    let addrs = target_addrs(args)?;
    let nodes = addrs.len();
    let cross_node = matches!(
        args.workload,
        Workload::Fanout {
            cross_node: true,
            ..
        }
    );
    let (requested_clients, fanout, load) = workload_shape(args)?;
    let size = args.size_or(64);
    if requested_clients == 0 {
        return Err("need at least one client".into());
    }
    if cross_node && nodes < 2 {
        return Err("fanout --cross-node needs several --addr (the nodes to cross between)".into());
    }
    // direct and cross-node fan-out: as many clients on every node, so that every
    // delivery crosses nodes.
    let clients = if nodes > 1 && (cross_node || matches!(args.workload, Workload::Direct)) {
        spread::round_up_clients(requested_clients, nodes)
    } else {
        requested_clients
    };
    let route = plan_route(clients, nodes, fanout, cross_node)?;
    check_messages(args, size)?;
    let prefix = login_prefix(args, clients)?;
    let idle = matches!(load, Load::Idle);
    let source_ips = source_ips(args, &addrs, idle.then_some(clients))?;
    let cross_share = if idle {
        0.0
    } else {
        spread::cross_share(&addrs, clients, &route)
    };
    Ok(Plan {
        access: Access::new(args, addrs, prefix, source_ips)?,
        load,
        clients,
        requested_clients,
        fanout,
        route,
        size,
        messages: args.messages,
        cross_share,
        threads: args.threads.clamp(1, clients),
    })
}

/// What the workload asks for: the clients (before any rounding up), the
/// recipients of each message, and the load shape.
fn workload_shape(args: &BenchArgs) -> Result<(usize, usize, Load), String> {
    Ok(match args.workload {
        Workload::Direct => (
            args.clients_or(100),
            1,
            Load::Closed {
                inflight: args.inflight,
            },
        ),
        Workload::Fanout { k, .. } => (
            args.clients_or(100),
            k,
            Load::Closed {
                inflight: args.inflight,
            },
        ),
        Workload::Rate { rate } => (
            args.clients_or(100),
            1,
            Load::Open {
                interval_ns: args.clients_or(100) as f64 / rate * 1e9,
            },
        ),
        Workload::Idle { connections } => (connections, 1, Load::Idle),
        Workload::Storm { .. } | Workload::Burst { .. } => {
            return Err("storm and burst have plans of their own".into())
        }
    })
}

/// Whom each client's messages go to: the next `fanout` clients, or with
/// `cross_node` the next ones on other nodes, if there are that many.
fn plan_route(
    clients: usize,
    nodes: usize,
    fanout: usize,
    cross_node: bool,
) -> Result<Route, String> {
    if fanout == 0 || fanout > clients {
        return Err(format!(
            "fanout K must be between 1 and the number of clients ({clients})"
        ));
    }
    if !cross_node {
        return Ok(Route::next(fanout));
    }
    let elsewhere = spread::clients_elsewhere(clients, nodes);
    if fanout > elsewhere {
        return Err(format!(
            "fanout {fanout} --cross-node: each client has only {elsewhere} clients on \
             other nodes ({clients} clients over {nodes} addresses); use K <= {elsewhere} \
             or more --clients"
        ));
    }
    Ok(Route::cross_node(fanout, nodes))
}

/// Checks what each client sends: its window, the payload size (room for the
/// header), and `--messages` (within the sequence numbers a payload carries).
fn check_messages(args: &BenchArgs, size: usize) -> Result<(), String> {
    if args.inflight == 0 {
        return Err("--inflight must be at least 1".into());
    }
    if size < payload::HEADER_LEN {
        return Err(format!(
            "--size {} is too small: payloads carry a {}-byte header",
            size,
            payload::HEADER_LEN
        ));
    }
    if args.messages == Some(0) || args.messages.is_some_and(|m| m > payload::MAX_SEQ) {
        return Err("--messages must be between 1 and 2^48 - 1".into());
    }
    Ok(())
}

/// Warnings about limits of the server under test that the plan goes past.
pub fn plan_warnings(plan: &Plan, pids: &[u32]) -> Vec<String> {
    let mut w = Vec::new();
    if plan.clients != plan.requested_clients {
        w.push(format!(
            "{} clients rounded up to {}, a multiple of the {} addresses, so that every \
             delivery crosses nodes",
            plan.requested_clients,
            plan.clients,
            plan.access.addrs.len()
        ));
    }
    if plan.access.target == Target::Achat {
        if plan.fanout > 64 {
            w.push(format!(
                "fanout {} is above the server's default max_recipients (64): expect errors",
                plan.fanout
            ));
        }
        let names: usize = (0..plan.fanout)
            .map(|k| plan.access.name(plan.clients - 1 - k).len() + 2)
            .sum();
        if names + plan.size > 8192 {
            w.push(format!(
                "message lines of about {} bytes exceed the server's default max_line_bytes (8192)",
                names + plan.size
            ));
        }
        let per_node = plan.clients.div_ceil(plan.access.addrs.len());
        if matches!(plan.load, Load::Idle) && per_node > 10_000 {
            w.push(format!(
                "{per_node} connections{} exceed the server's default max_connections (10000): the rest wait in the backlog",
                if plan.access.addrs.len() > 1 { " per server" } else { "" }
            ));
        }
    }
    // Each server takes its share of the connections.
    let conns = (plan.clients * conns_per_client(plan) as usize).div_ceil(plan.access.addrs.len());
    for &pid in pids {
        if let Some(limit) = sys::proc_nofile(pid) {
            if conns as u64 + 16 > limit {
                w.push(format!(
                    "the server (pid {pid}) may open only {limit} files (RLIMIT_NOFILE), fewer than the {conns} connections planned{}",
                    if plan.access.addrs.len() > 1 { " for it" } else { "" }
                ));
            }
        }
    }
    w
}

fn conns_per_client(plan: &Plan) -> u64 {
    match (plan.access.target, plan.load) {
        (Target::Redis, Load::Idle) | (Target::Achat | Target::Nats, _) => 1,
        (Target::Redis, _) => 2,
    }
}

/// Makes sure this process may open enough descriptors, or says why not.
pub fn ensure_descriptors(plan: &Plan) -> Result<(), String> {
    ensure_fds(plan.clients as u64 * conns_per_client(plan), plan.threads)
}

/// Makes sure this process may open `conns` connections (and what `threads`
/// worker threads need besides), raising the soft RLIMIT_NOFILE if it must.
pub fn ensure_fds(conns: u64, threads: usize) -> Result<(), String> {
    let need = conns + 2 * threads as u64 + 32;
    let (soft, hard) = sys::nofile_limit().map_err(|e| format!("getrlimit: {e}"))?;
    if need > hard {
        return Err(format!(
            "{conns} connections need about {need} open files, but this process may open at most {hard} \
             (RLIMIT_NOFILE soft {soft}, hard {hard}); use fewer connections, or raise the hard limit \
             (ulimit -Hn, LimitNOFILE=) — the server needs one descriptor per connection too"
        ));
    }
    if need > soft {
        sys::raise_nofile(need)
            .map_err(|e| format!("cannot raise RLIMIT_NOFILE from {soft} to {need}: {e}"))?;
    }
    Ok(())
}
