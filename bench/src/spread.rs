//! Spreading the bench's clients over several servers (`--addr A --addr B ...`, the
//! nodes of a cluster that share one login namespace): which address each client
//! uses, whom each message goes to ([`Route`], with `fanout K --cross-node` only to
//! clients on other nodes), and the share of deliveries that cross nodes. Pure
//! functions, fixed before any connection opens.

use std::net::SocketAddr;

/// The addresses for people: `127.0.0.1:8081, 127.0.0.1:8082`.
pub fn addrs_text(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    list.join(", ")
}

/// The address index client `client` connects to: round robin over `nodes` addresses.
pub fn node_of(client: usize, nodes: usize) -> usize {
    client % nodes.max(1)
}

/// `clients` rounded up to a multiple of `nodes`, so that every node holds as many
/// clients and client i's neighbour i+1 is always on the next node.
pub fn round_up_clients(clients: usize, nodes: usize) -> usize {
    clients.div_ceil(nodes.max(1)) * nodes.max(1)
}

/// The fewest clients that some client has on nodes other than its own: the largest
/// K that `fanout K --cross-node` can serve.
pub fn clients_elsewhere(clients: usize, nodes: usize) -> usize {
    clients - clients.div_ceil(nodes.max(1))
}

/// Whom each message goes to, as offsets from the sender: client i sends to
/// `(i + offset(k)) mod N` for k in `0..fanout`. Offsets are the same for every
/// sender, so a recipient finds the checker of a sender from their distance alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Recipients per message (1 for `direct` and `rate`).
    pub fanout: usize,
    /// `--cross-node`: the addresses the clients are spread over, whose multiples are
    /// skipped (offset j lands on the sender's own node when j % nodes == 0, since the
    /// plan makes the client count a multiple of `nodes`). 0: the next `fanout` clients.
    pub skip_every: usize,
}

impl Route {
    /// Recipients i+1..i+fanout.
    pub fn next(fanout: usize) -> Route {
        Route {
            fanout,
            skip_every: 0,
        }
    }

    /// The next `fanout` clients on other nodes than the sender's; needs a client
    /// count that is a multiple of `nodes` (at least 2).
    pub fn cross_node(fanout: usize, nodes: usize) -> Route {
        debug_assert!(nodes >= 2);
        Route {
            fanout,
            skip_every: nodes,
        }
    }

    /// The offset of the k-th recipient (k < fanout): k+1, or with `--cross-node` the
    /// k-th offset that is not a multiple of the node count (n-1 of every n are not).
    #[inline]
    pub fn offset(&self, k: usize) -> usize {
        match self.skip_every {
            0 => k + 1,
            n => k + 1 + k / (n - 1),
        }
    }

    /// The recipient slot k of a message that travelled `distance` = offset - 1 clients
    /// forward, or `None` if no sender sends that far (or to its own node).
    #[inline]
    pub fn slot(&self, distance: usize) -> Option<usize> {
        let k = match self.skip_every {
            0 => distance,
            n => {
                let j = distance + 1;
                if j.is_multiple_of(n) {
                    return None;
                }
                j - 1 - j / n
            }
        };
        (k < self.fanout).then_some(k)
    }

    /// The recipients of client `i` among `clients`.
    pub fn recipients(&self, i: usize, clients: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.fanout).map(move |k| (i + self.offset(k)) % clients)
    }

    /// The sender whose k-th recipient is client `r`.
    #[inline]
    pub fn sender(&self, r: usize, k: usize, clients: usize) -> usize {
        (r + clients - self.offset(k) % clients) % clients
    }
}

/// The share of the planned deliveries (every client sends the same number of messages,
/// each to its `route` recipients) whose sender and recipient use different addresses.
/// 0 with one address, or with the same address given for every node.
pub fn cross_share(addrs: &[SocketAddr], clients: usize, route: &Route) -> f64 {
    let n = addrs.len();
    if n < 2 || clients == 0 || route.fanout == 0 {
        return 0.0;
    }
    let mut crossing = 0u64;
    for i in 0..clients {
        let home = addrs[node_of(i, n)];
        crossing += route
            .recipients(i, clients)
            .filter(|&r| addrs[node_of(r, n)] != home)
            .count() as u64;
    }
    crossing as f64 / (clients as f64 * route.fanout as f64)
}
