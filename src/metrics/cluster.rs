//! The cluster's metrics (ARCHITECTURE §6 names, `achat_cluster_*`): the link's state, what
//! crosses it, and why a cross-node delivery was lost. They read 0 on a single node.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

use super::families::add;
use crate::cluster::checks::Refusal;

/// The least time between two warnings that input from Redis was refused.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(60);

type Labels = Vec<(&'static str, &'static str)>;

/// Why a delivery to another node's login did not reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossDrop {
    /// Redis could not be reached: the sender was told `could not deliver`.
    LinkDown,
    /// More relay frames were queued for Redis than `OUTGOING_LIMIT`.
    OutgoingFull,
    /// No node received the frame (its node is gone).
    NoReceiver,
    /// The recipient had left this node when the frame arrived.
    RecipientGone,
    /// More relay frames were waiting here than `INBOUND_LIMIT`.
    InboundFull,
    /// The frame could not be read.
    Malformed,
}

impl CrossDrop {
    const ALL: [CrossDrop; 6] = [
        CrossDrop::LinkDown,
        CrossDrop::OutgoingFull,
        CrossDrop::NoReceiver,
        CrossDrop::RecipientGone,
        CrossDrop::InboundFull,
        CrossDrop::Malformed,
    ];

    fn label(self) -> &'static str {
        match self {
            CrossDrop::LinkDown => "link_down",
            CrossDrop::OutgoingFull => "outgoing_full",
            CrossDrop::NoReceiver => "no_receiver",
            CrossDrop::RecipientGone => "recipient_gone",
            CrossDrop::InboundFull => "inbound_full",
            CrossDrop::Malformed => "malformed",
        }
    }
}

/// Counter handles for the cluster; each is one atomic add.
#[derive(Debug)]
pub struct ClusterMetrics {
    /// 1 while the node is connected to Redis and registered.
    pub link_up: Gauge,
    /// Nodes whose lease is alive, this one included, as the last renewal saw them.
    pub live_nodes: Gauge,
    /// Seconds the last lease renewal took to be answered by Redis.
    pub redis_round_trip: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Connections to Redis made (the first, and each reconnect).
    pub connects: Counter,
    /// Attempts to connect that failed.
    pub connect_failures: Counter,
    /// PUBLISH commands of relay frames (one per destination node per batch, or fewer).
    pub publishes: Counter,
    /// Relay frames received from other nodes.
    pub batches_received: Counter,
    /// Deliveries sent to logins on other nodes.
    pub deliveries_out: Counter,
    /// Deliveries received for logins on this node.
    pub deliveries_in: Counter,
    /// Cross-node deliveries lost, in `CrossDrop::ALL` order.
    dropped: Vec<Counter>,
    pub renewals_ok: Counter,
    /// Renewals that found the lease run out (the node's logins had been freed).
    pub renewals_expired: Counter,
    pub renewals_failed: Counter,
    /// Claims of a login in the registry, by answer.
    pub claims_granted: Counter,
    pub claims_taken: Counter,
    pub claims_unavailable: Counter,
    /// Logins held by other nodes, as this node's directory knows them.
    pub remote_logins: Gauge,
    /// Input from Redis refused by a-chat's rules, in `Refusal::ALL` order.
    refused: Vec<Counter>,
    /// Refusals since the last summary warning.
    refused_unwarned: AtomicU64,
    /// When the last summary warning was logged (`None`: never).
    refused_warned: Mutex<Option<Instant>>,
    /// Times the directory copy was read from the registry again because events were
    /// lost (their queue was full, or too many waited for a snapshot).
    pub resyncs: Counter,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let registry = registry.sub_registry_with_prefix("cluster");
        let link_up: Gauge = add(
            registry,
            "link_up",
            "1 while this node is connected to the cluster's Redis and registered",
        );
        let connects: Family<Labels, Counter> = add(
            registry,
            "connects",
            "Connections to the cluster's Redis, by result",
        );
        let publishes: Counter = add(
            registry,
            "publishes",
            "Relay frames published to other nodes (one per destination node per batch at most)",
        );
        let batches_received: Counter = add(
            registry,
            "batches_received",
            "Relay frames received from other nodes",
        );
        let deliveries: Family<Labels, Counter> = add(
            registry,
            "deliveries",
            "Deliveries that crossed nodes, by direction (out: to another node; in: from one)",
        );
        let dropped: Family<Labels, Counter> =
            add(registry, "dropped", "Cross-node deliveries lost, by reason");
        let renewals: Family::<Labels, Counter> = add(registry, "lease_renewals", "Renewals of this node's lease, by result (expired: the lease had run out and the logins were claimed again)");
        let claims: Family<Labels, Counter> = add(
            registry,
            "claims",
            "Logins claimed in the cluster registry, by answer",
        );
        let remote_logins: Gauge = add(
            registry,
            "remote_logins",
            "Logins held by other nodes, as this node knows them",
        );
        let refused: Family<Labels, Counter> = add(
            registry,
            "refused",
            "Relayed records, directory events and kicks from Redis refused by a-chat's rules, by reason",
        );
        let live_nodes: Gauge = add(registry, "live_nodes", "Nodes of the cluster whose lease is alive, this one included, as of this node's last lease renewal");
        let redis_round_trip = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "redis_round_trip",
            "Time Redis took to answer this node's last lease renewal",
            prometheus_client::registry::Unit::Seconds,
            redis_round_trip.clone(),
        );
        let resyncs: Counter = add(
            registry,
            "resyncs",
            "Directory copies read from the registry again because directory events were lost",
        );
        let get = |f: &Family<Labels, Counter>, k: &'static str, v: &'static str| {
            f.get_or_create_owned(&vec![(k, v)])
        };
        ClusterMetrics {
            link_up,
            live_nodes,
            redis_round_trip,
            connects: get(&connects, "result", "ok"),
            connect_failures: get(&connects, "result", "error"),
            publishes,
            batches_received,
            deliveries_out: get(&deliveries, "direction", "out"),
            deliveries_in: get(&deliveries, "direction", "in"),
            dropped: CrossDrop::ALL
                .iter()
                .map(|r| get(&dropped, "reason", r.label()))
                .collect(),
            renewals_ok: get(&renewals, "result", "ok"),
            renewals_expired: get(&renewals, "result", "expired"),
            renewals_failed: get(&renewals, "result", "error"),
            claims_granted: get(&claims, "result", "granted"),
            claims_taken: get(&claims, "result", "taken"),
            claims_unavailable: get(&claims, "result", "unavailable"),
            remote_logins,
            refused: Refusal::ALL
                .iter()
                .map(|r| get(&refused, "reason", r.label()))
                .collect(),
            refused_unwarned: AtomicU64::new(0),
            refused_warned: Mutex::new(None),
            resyncs,
        }
    }

    /// Counts `n` refusals for `why`, and warns at most once a minute with how many there
    /// were since the last warning (each is logged at debug where it is refused).
    pub fn refused(&self, why: Refusal, n: u64) {
        if n == 0 {
            return;
        }
        self.refused[why as usize].inc_by(n);
        let since = self.refused_unwarned.fetch_add(n, Ordering::Relaxed) + n;
        let mut warned = self
            .refused_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if warned.is_some_and(|at| at.elapsed() < REFUSED_WARN_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        self.refused_unwarned.fetch_sub(since, Ordering::Relaxed);
        drop(warned);
        warn!(
            refused = since,
            last_reason = why.label(),
            "input from the cluster's Redis broke a-chat's rules and was refused \
             (achat_cluster_refused_total counts it by reason; the details are logged at debug): \
             is something other than a-chat publishing to this Redis?"
        );
    }

    pub fn dropped(&self, why: CrossDrop, n: u64) {
        if n > 0 {
            self.dropped[why as usize].inc_by(n);
        }
    }
}
