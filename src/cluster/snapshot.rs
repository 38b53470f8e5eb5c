//! The link's read of the whole registry into a new directory copy: at a join, after
//! every reconnection, and when directory events were lost. In pages (HSCAN), so that a
//! large registry never blocks Redis for long; a page may repeat an entry, and changes
//! during the scan reach the copy as events anyway. The copy is built here, a page at a
//! time between waits for Redis, and handed to the router whole: the router never stops
//! for it. Entries that break the rules or the copy's caps are left out and counted
//! (`connection::read_page`).

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::connection::read_page;
use super::{LinkError, Logins, Shared};

/// Registry entries asked for per page of the snapshot.
const SNAPSHOT_PAGE: usize = 2000;
/// The most entries a new directory copy is sized for before its pages are read: what
/// `HLEN` says is believed up to here (8 M logins, eight times the plan in SCALING.md),
/// and never more than the copy's cap, so that a wrong answer cannot make the node ask
/// for memory it will never use.
const PRESIZE_MAX: usize = 1 << 23;

/// Every other node's login in the registry, as a copy for node `me`.
pub async fn read_registry(
    conn: &mut MultiplexedConnection,
    me: &std::sync::Arc<str>,
    shared: &Shared,
) -> Result<Logins, LinkError> {
    let size: usize = redis::cmd("HLEN")
        .arg("achat:logins")
        .query_async(conn)
        .await?;
    let caps = shared.caps;
    let mut copy = Logins::new(me.clone(), caps);
    copy.reserve(size.min(PRESIZE_MAX).min(caps.total));
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Value) = redis::cmd("HSCAN")
            .arg("achat:logins")
            .arg(cursor)
            .arg("COUNT")
            .arg(SNAPSHOT_PAGE)
            .query_async(conn)
            .await?;
        read_page(page, &mut copy, shared);
        if next == 0 {
            return Ok(copy);
        }
        cursor = next;
    }
}
