//! How a reader waits for input: a read into the thread's shared buffer, the drain (woken
//! through the connection's queue), or the idle timeout, whichever comes first; and,
//! once the drain has begun, taking in what the kernel already holds.

use std::cell::RefCell;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use futures_lite::future::FutureExt as _;

use super::Reader;
use crate::protocol::LineFramer;
use crate::runtime;
use crate::server::conninfo::ConnInfo;
use crate::server::outbox::Outbox;

/// Bytes asked of one `read`. Reads go into a buffer shared by every connection that its
/// thread serves (see [`SCRATCH`]), so a connection waiting for input holds no read
/// buffer at all, and one that keeps a partial line holds just that line.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The buffer every read on this thread goes into. A read and the copy of what it
    /// got into the connection's framer happen in one poll, so no two connections ever
    /// use it at once.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}
/// Reads taken in after the drain begins, at most (what the kernel already holds), and
/// the size of each: at most 256 KiB per connection, so that the drain's work stays
/// bounded however much a client had sent ahead.
const DRAIN_READS: usize = 64;
const DRAIN_READ: usize = 4096;

/// What one wait for input gave.
pub(super) enum Input {
    Read(std::io::Result<usize>),
    Drain,
    Timeout,
}

impl Reader {
    /// Waits for input, the drain, or `limit` (zero means no limit).
    ///
    /// A plain function returning a combinator, not an `async fn`, so that the waiting
    /// futures are stored once in every idle connection, not twice.
    pub(super) fn read<'a>(
        &'a mut self,
        framer: &'a mut LineFramer,
        limit: Duration,
    ) -> impl Future<Output = Input> + 'a {
        // Disjoint borrows of the reader's fields, so that waiting for the drain needs no
        // clone of the shutdown handle on every read.
        let Reader {
            ctx,
            emptied,
            outbox,
            ..
        } = self;
        let (metrics, shutdown) = (&ctx.metrics, &ctx.shutdown);
        // The drain wakes every reader through its queue (`Queue::wake_reader`) after the
        // signal is set, so a reader that saw no drain here is woken to look again.
        let outbox: &Outbox = outbox;
        let stream = outbox.stream();
        let drain = futures::future::poll_fn(move |_| match shutdown.is_draining() {
            true => Poll::Ready(Input::Drain),
            false => Poll::Pending,
        });
        let timeout = async move {
            if limit.is_zero() {
                futures_lite::future::pending::<()>().await;
            }
            // Boxed: only with `idle_timeout` set does a read keep room for a timer.
            Box::pin(runtime::sleep(limit)).await;
            Input::Timeout
        };
        let read = async move {
            if *emptied {
                if let Err(e) = stream.readable().await {
                    return Input::Read(Err(e));
                }
            }
            let result = futures::future::poll_fn(|cx| {
                SCRATCH.with(|scratch| {
                    let scratch = &mut *scratch.borrow_mut();
                    let result = std::task::ready!(stream.poll_read(cx, scratch));
                    if let Ok(n) = result {
                        framer.push(&scratch[..n]);
                    }
                    Poll::Ready(result)
                })
            })
            .await;
            let n = *result.as_ref().unwrap_or(&0);
            if n > 0 {
                metrics.bytes_in.inc_by(n as u64);
                ConnInfo::add(&outbox.info().bytes_in, n as u64);
            }
            // A TLS session may hold decrypted bytes the socket no longer shows as
            // readable: only a plain socket is waited on after a short read.
            *emptied = n < READ_SIZE && !stream.is_buffered();
            Input::Read(result)
        };
        read.or(drain).or(timeout)
    }

    /// After the drain began: takes in what the kernel has already received, without waiting.
    pub(super) fn take_in_received(&mut self, framer: &mut LineFramer) {
        SCRATCH.with(|scratch| {
            let scratch = &mut scratch.borrow_mut()[..DRAIN_READ];
            for _ in 0..DRAIN_READS {
                let n = self.outbox.stream().read_now(scratch).unwrap_or(0);
                if n == 0 {
                    break;
                }
                framer.push(&scratch[..n]);
                self.ctx.metrics.bytes_in.inc_by(n as u64);
            }
        })
    }
}
