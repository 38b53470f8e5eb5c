//! TLS handshakes in progress, bounded in count, in memory and in where they run: the
//! work an outsider triggers by connecting to a TLS listener, kept off the thread that
//! serves chats.
//!
//! - Count: at most [`MAX_HANDSHAKES`] at once. A TLS connection beyond them waits for a
//!   slot (holding its socket and its connection token, no buffer), first come first
//!   served, within its `login_timeout`, as connections beyond `max_connections` wait in
//!   the kernel's queue; `achat_tls_handshakes_in_progress` and `_waiting` count them.
//! - Memory: before rustls reads a byte, the first record's header is looked at in the
//!   kernel's buffer (a peek); a ClientHello that says it is longer than
//!   [`MAX_CLIENT_HELLO`] is refused (`too_large`), so a handshake that waits for the rest
//!   of its ClientHello holds a few tens of KiB at most, not rustls's 64 KiB.
//! - CPU: the handshake itself (the server's signature: about a millisecond of RSA-2048)
//!   runs on the runtime's threads apart (`runtime::spawn_apart`), at a lower priority.

use std::sync::Arc;
use std::time::Duration;

use async_lock::Semaphore;
use prometheus_client::metrics::gauge::Gauge;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::runtime::{self, Sock};
use crate::tls::{self, Failure, ServerStream};

/// Handshakes in progress at once. Each holds at most a ClientHello (see
/// [`MAX_CLIENT_HELLO`]) and rustls's state: a few MiB for all of them. Enough for the
/// CPU: one core does about 1300 RSA-2048 handshakes a second, which 256 at once keep
/// busy even with clients 200 ms away.
pub const MAX_HANDSHAKES: usize = 256;

/// The longest ClientHello taken, in bytes: one whole TLS record. Browsers send 0.5-2 KiB
/// (post-quantum key shares included); TLS allows up to 64 KiB over several records,
/// which rustls would hold for each handshake waiting for the rest.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The longest pause between two looks at a ClientHello whose first bytes have come and
/// whose header has not (the pauses double from a few milliseconds).
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The slots of [`MAX_HANDSHAKES`], shared by every TLS listener of the process.
static SLOTS: Semaphore = Semaphore::new(MAX_HANDSHAKES);

/// What the first bytes of a connection on a TLS listener say about its ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// Fewer bytes than a record header and a handshake header: wait for more.
    NeedMore,
    /// A ClientHello of an acceptable length, or not a ClientHello at all (rustls then
    /// refuses it with the right reason).
    Proceed,
    /// A ClientHello longer than the bound.
    TooLarge,
}

/// Reads `head`, the first bytes received: a TLS record header (type 22: handshake,
/// version, length) and a handshake header (type 1: ClientHello, 24-bit length).
pub fn client_hello(head: &[u8], max: usize) -> Hello {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    match head {
        [] => Hello::NeedMore,
        [first, ..] if *first != HANDSHAKE => Hello::Proceed,
        [_, _, _, _, _, kind, a, b, c, ..] => {
            let length = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if *kind == CLIENT_HELLO && length > max {
                Hello::TooLarge
            } else {
                Hello::Proceed
            }
        }
        _ => Hello::NeedMore,
    }
}

/// Runs the server side of a handshake on `sock`: looks at the ClientHello's length
/// (a peek, no buffer), waits for a slot, and runs the handshake apart from the chat's
/// threads. Cancelled (slot given back) when the returned future is dropped, e.g. at its
/// deadline.
pub async fn shake(
    tls: Arc<tls::Server>,
    sock: Sock,
    metrics: &Metrics,
) -> Result<ServerStream, Failure> {
    check_hello(&sock).await?;
    let slot = {
        let _waiting = Counted::new(&metrics.tls_gate.waiting);
        SLOTS.acquire().await
    };
    let _in_progress = Counted::new(&metrics.tls_gate.in_progress);
    let started = std::time::Instant::now();
    // The connection's span goes along, for what rustls logs.
    let handshake = runtime::spawn_apart(async move { tls.accept(sock).await }.in_current_span());
    let shaken = handshake.await;
    (metrics.timings.tls_handshake).observe(started.elapsed().as_secs_f64());
    drop(slot);
    shaken
}

/// Waits until the ClientHello's header has arrived (without taking it from the socket)
/// and refuses one that is too long.
async fn check_hello(sock: &Sock) -> Result<(), Failure> {
    let mut head = [0u8; 9];
    let mut pause = Duration::from_millis(4);
    loop {
        let seen = sock.peek(&mut head).await.map_err(|_| Failure::Closed)?;
        if seen == 0 {
            return Err(Failure::Closed);
        }
        match client_hello(&head[..seen], MAX_CLIENT_HELLO) {
            Hello::Proceed => return Ok(()),
            Hello::TooLarge => return Err(Failure::TooLarge),
            // A header split over segments is rare: the socket stays readable while the
            // first bytes wait there, so look again after a pause, not at readiness.
            Hello::NeedMore => {
                runtime::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// One unit of a gauge for as long as it lives.
struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a Gauge) -> Counted<'a> {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(length: usize) -> Vec<u8> {
        let l = (length as u32).to_be_bytes();
        vec![22, 3, 1, 0x40, 0, 1, l[1], l[2], l[3]]
    }

    #[test]
    fn a_client_hello_is_judged_by_its_declared_length() {
        assert_eq!(client_hello(&hello(512), 16384), Hello::Proceed);
        assert_eq!(client_hello(&hello(16384), 16384), Hello::Proceed);
        assert_eq!(client_hello(&hello(16385), 16384), Hello::TooLarge);
        assert_eq!(client_hello(&hello(61 * 1024), 16384), Hello::TooLarge);
        assert_eq!(client_hello(&hello(61 * 1024)[..8], 16384), Hello::NeedMore);
        assert_eq!(client_hello(&[22], 16384), Hello::NeedMore);
        assert_eq!(client_hello(&[], 16384), Hello::NeedMore);
    }

    #[test]
    fn what_is_not_a_client_hello_goes_on_to_rustls() {
        assert_eq!(client_hello(b"alice\n", 16384), Hello::Proceed);
        assert_eq!(client_hello(b"G", 16384), Hello::Proceed);
        // A handshake record that is not a ClientHello (type 2), however long it says it is.
        let mut other = hello(60_000);
        other[5] = 2;
        assert_eq!(client_hello(&other, 16384), Hello::Proceed);
    }
}
