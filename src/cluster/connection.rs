//! The link's connections to Redis: redis-rs's multiplexed connection over RESP3 on
//! sockets of the daemon's own runtime, each driver a task of that runtime. One
//! connection carries the registry calls and the publishes; the other is subscribed,
//! and what is published to this node reaches [`on_push`] in its driver, which hands it
//! to the router directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_channel::Sender;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tracing::Instrument as _;

use super::checks::{check_entry, check_event, Refusal};
use super::frame::{self, parse_entry, parse_event};
use super::{Inbound, LinkError, Logins, RedisAddr, Settings, Shared};
use crate::metrics::cluster::CrossDrop;
use crate::runtime;

/// The registry's operations, one script (`registry.lua`).
const REGISTRY: &str = include_str!("registry.lua");
/// Where the directory's changes are published (the script writes it too).
pub const DIRECTORY: &str = "achat:directory";
/// Bytes of one sender's records in a relay frame up to which they still get through
/// when the node is behind (see `INBOUND_SOFT`): a few lines of chat.
const LIGHT_SENDER: usize = 4096;

/// The channel a node's relay frames are published on.
pub fn relay_channel(node: &str) -> String {
    format!("achat:to:{node}")
}

/// Connections to Redis, joined and subscribed.
pub struct Session {
    pub conn: MultiplexedConnection,
    /// The registry script's SHA1, loaded on this connection's server.
    pub sha: String,
    /// Subscribed to the directory and this node's relays; nothing else is sent on it.
    pub subscriber: MultiplexedConnection,
    /// Gets a value when either connection's driver ends: Redis closed it, or it failed.
    pub closed: async_channel::Receiver<()>,
    /// The subscriber's driver, on a thread beside the chat's. Dropping the session (the
    /// link gave up on it) stops it and closes its socket, so that a connection left with
    /// a backlog of publishes stops costing CPU at once.
    _subscriber_driver: runtime::ApartTask<()>,
}

/// Connects to Redis on the daemon's runtime, loads the registry script, and routes
/// what is published to this node into the router's inbound queue.
pub async fn connect(
    settings: &Settings,
    shared: &Arc<Shared>,
    inbound: &Sender<Inbound>,
) -> Result<Session, LinkError> {
    let timeout = (settings.lease / 3).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let pushes = {
        let shared = shared.clone();
        let inbound = inbound.clone();
        let own = relay_channel(&settings.node_id).into_bytes();
        move |push: PushInfo| -> Result<(), ()> {
            on_push(push, &own, &shared, &inbound);
            Ok(())
        }
    };
    // Two connections: what is published to this node (a flood of it too) queues on the
    // second, never in front of a claim's or a renewal's answer on the first.
    let (closing, closed) = async_channel::bounded(2);
    let plain = AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    let (mut conn, conn_driver) = dial(settings, timeout, plain, closing.clone()).await?;
    // The registry's answers (claims, renewals, the pages of a snapshot) stay on the
    // daemon's own threads, next to the link that waits for them.
    drop(runtime::spawn(conn_driver));
    let with_pushes = AsyncConnectionConfig::new()
        .set_response_timeout(Some(timeout))
        .set_push_sender(pushes);
    let (subscriber, subscriber_driver) = dial(settings, timeout, with_pushes, closing).await?;
    // What is published to this node arrives at whatever rate anyone who can publish to
    // Redis chooses: its driver reads and parses it on a thread of its own, so that a flood
    // never stalls the chat's thread (a forged flood kept a node's own pair to 2-5 round
    // trips in 3 s when it ran there), at the chat's priority, since relays are chat too.
    let subscriber_driver = runtime::spawn_beside(subscriber_driver);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(REGISTRY)
        .query_async(&mut conn)
        .await?;
    shared.metrics.cluster.connects.inc();
    Ok(Session {
        conn,
        subscriber,
        sha,
        closed,
        _subscriber_driver: subscriber_driver,
    })
}

/// A connection to Redis and its driver, which must be spawned for the connection to work
/// (and says on `closing` when it ends).
type Dialed = (
    MultiplexedConnection,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

/// One connection to Redis on the daemon's runtime, and its driver.
async fn dial(
    settings: &Settings,
    timeout: Duration,
    config: AsyncConnectionConfig,
    closing: async_channel::Sender<()>,
) -> Result<Dialed, LinkError> {
    let (host, port) = match &settings.addr {
        RedisAddr::Tcp { host, port } => (host, *port),
        RedisAddr::Unix(path) => {
            let to = || path.display().to_string();
            let stream = runtime::timeout(timeout, runtime::connect_unix(path))
                .await
                .map_err(|_| LinkError::ConnectTimeout { to: to(), timeout })?
                .map_err(|source| LinkError::Connect { to: to(), source })?;
            return speak_resp(settings, stream, timeout, config, closing).await;
        }
    };
    let to = || format!("{host}:{port}");
    let stream = runtime::timeout(timeout, runtime::connect_host(host, port))
        .await
        .map_err(|_| LinkError::ConnectTimeout { to: to(), timeout })?
        .map_err(|source| LinkError::Connect { to: to(), source })?;
    let Some(tls) = &settings.tls else {
        return speak_resp(settings, stream, timeout, config, closing).await;
    };
    let stream = runtime::timeout(timeout, tls.connector.connect(tls.name.clone(), stream))
        .await
        .map_err(|_| LinkError::TlsTimeout(timeout))?
        .map_err(LinkError::Tls)?;
    speak_resp(settings, stream, timeout, config, closing).await
}

/// Redis's own handshake over `stream` (plain or TLS), and the connection's driver as a
/// task of the runtime.
async fn speak_resp<S>(
    settings: &Settings,
    stream: S,
    timeout: Duration,
    config: AsyncConnectionConfig,
    closing: async_channel::Sender<()>,
) -> Result<Dialed, LinkError>
where
    S: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static,
{
    let (conn, driver) = runtime::timeout(
        timeout,
        MultiplexedConnection::new_with_config(&settings.redis, stream.compat(), config),
    )
    .await
    .map_err(|_| LinkError::HandshakeTimeout)??;
    let driver = Box::pin(
        async move {
            driver.await;
            let _ = closing.try_send(());
        }
        .in_current_span(),
    );
    Ok((conn, driver))
}

/// A kick published to this node: read, held to the rules, and handed to the router;
/// refused and counted (logged at debug) when it breaks them.
fn on_kick(payload: &[u8], shared: &Shared, inbound: &Sender<Inbound>) {
    let checked = super::kick::decode(payload)
        .ok_or(Refusal::Kick)
        .and_then(|kick| super::kick::check(&kick, &shared.rules.get()).map(|()| kick));
    match checked {
        Ok(kick) => {
            if inbound.try_send(Inbound::Kick(kick.into())).is_err() {
                shared.metrics.cluster.refused(Refusal::QueueFull, 1);
                tracing::warn!("a kick from another node was lost: the router is behind");
            }
        }
        Err(why) => {
            shared.metrics.cluster.refused(why, 1);
            tracing::debug!(
                bytes = payload.len(),
                "a kick frame that breaks the rules was refused"
            );
        }
    }
}

/// A message published to this node (in the connection's driver): a directory change,
/// or a relay frame, handed to the router as it is.
fn on_push(push: PushInfo, own: &[u8], shared: &Shared, inbound: &Sender<Inbound>) {
    if push.kind != PushKind::Message {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return;
    };
    if channel == own && payload.starts_with(super::kick::MAGIC) {
        on_kick(&payload, shared, inbound);
    } else if channel == own {
        let m = &shared.metrics.cluster;
        m.batches_received.inc();
        let mut payload = payload;
        // Behind: only senders with a few lines in this frame get through, so a flood
        // from another node's client costs its own lines, not everyone's. A frame larger
        // than all that may wait is not even sorted out.
        let behind = shared.inbound.load(Ordering::Acquire) > super::INBOUND_SOFT;
        if behind && payload.len() <= super::INBOUND_LIMIT {
            match frame::keep_light(&payload, LIGHT_SENDER) {
                Some((kept, dropped)) => {
                    m.dropped(CrossDrop::InboundFull, dropped);
                    payload = kept;
                }
                None => {
                    m.dropped(CrossDrop::Malformed, 1);
                    return;
                }
            }
        }
        let queued = shared.inbound.fetch_add(payload.len(), Ordering::AcqRel);
        if queued + payload.len() > super::INBOUND_LIMIT {
            shared.inbound.fetch_sub(payload.len(), Ordering::AcqRel);
            m.dropped(CrossDrop::InboundFull, frame::deliveries(&payload));
            return;
        }
        if let Err(full) = inbound.try_send(Inbound::Relay(payload.into())) {
            // Too many messages wait for the router (tiny frames, or directory events).
            if let Inbound::Relay(frame) = full.into_inner() {
                shared.inbound.fetch_sub(frame.len(), Ordering::AcqRel);
                m.dropped(CrossDrop::InboundFull, frame::deliveries(&frame));
            }
        }
    } else if channel == DIRECTORY.as_bytes() {
        let Some(event) = parse_event(&payload) else {
            return;
        };
        let m = &shared.metrics.cluster;
        if let Err(why) = check_event(&event, &shared.rules.get()) {
            tracing::debug!(
                reason = why.label(),
                bytes = payload.len(),
                "a directory event that breaks the rules was refused"
            );
            m.refused(why, 1);
            return;
        }
        if inbound.len() >= super::INBOUND_EVENTS
            || inbound.try_send(Inbound::Event(event)).is_err()
        {
            // Lost: the copy would miss it, so it is read from the registry again.
            m.refused(Refusal::QueueFull, 1);
            shared.ask_resync();
        }
    }
}

/// A page of the registry (a flat list of look, `node\nlogin`) into `copy`; entries that
/// are not what the registry writes are skipped, and entries that break the rules or the
/// copy's caps are refused and counted.
pub fn read_page(page: Value, copy: &mut Logins, shared: &Shared) {
    let rules = shared.rules.get();
    let m = &shared.metrics.cluster;
    let items = match page {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return,
    };
    let mut it = items.into_iter();
    while let (Some(Value::BulkString(look)), Some(Value::BulkString(entry))) =
        (it.next(), it.next())
    {
        if let (Ok(look), Some((node, login))) = (std::str::from_utf8(&look), parse_entry(&entry)) {
            if let Err(why) =
                check_entry(look, node, login, &rules).and_then(|()| copy.insert(look, node, login))
            {
                tracing::debug!(
                    reason = why.label(),
                    "a registry entry was left out of the copy"
                );
                m.refused(why, 1);
            }
        }
    }
}
