//! The cluster's metrics (ARCHITECTURE §6 names, `achat_cluster_*`): the link's state, what
//! crosses it, and why a cross-node delivery was lost. They read 0 on a single node.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> ClusterMetrics {
        let registry = registry.sub_registry_with_prefix("cluster");
        let link_up = Gauge::default();
        registry.register(
            "link_up",
            "1 while this node is connected to the cluster's Redis and registered",
            link_up.clone(),
        );
        let connects = Family::<Labels, Counter>::default();
        registry.register(
            "connects",
            "Connections to the cluster's Redis, by result",
            connects.clone(),
        );
        let publishes = Counter::default();
        registry.register(
            "publishes",
            "Relay frames published to other nodes (one per destination node per batch at most)",
            publishes.clone(),
        );
        let batches_received = Counter::default();
        registry.register(
            "batches_received",
            "Relay frames received from other nodes",
            batches_received.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries that crossed nodes, by direction (out: to another node; in: from one)",
            deliveries.clone(),
        );
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "dropped",
            "Cross-node deliveries lost, by reason",
            dropped.clone(),
        );
        let renewals = Family::<Labels, Counter>::default();
        registry.register(
            "lease_renewals",
            "Renewals of this node's lease, by result (expired: the lease had run out and the logins were claimed again)",
            renewals.clone(),
        );
        let claims = Family::<Labels, Counter>::default();
        registry.register(
            "claims",
            "Logins claimed in the cluster registry, by answer",
            claims.clone(),
        );
        let remote_logins = Gauge::default();
        registry.register(
            "remote_logins",
            "Logins held by other nodes, as this node knows them",
            remote_logins.clone(),
        );
        let get = |f: &Family<Labels, Counter>, k: &'static str, v: &'static str| {
            f.get_or_create_owned(&vec![(k, v)])
        };
        ClusterMetrics {
            link_up,
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
        }
    }

    pub fn dropped(&self, why: CrossDrop, n: u64) {
        if n > 0 {
            self.dropped[why as usize].inc_by(n);
        }
    }
}
