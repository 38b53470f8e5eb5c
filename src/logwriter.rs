//! The log's writer: lines are copied into one shared buffer, and a thread of their own
//! writes them out, so a slow log reader (a full pipe, a busy journal) never stalls the
//! threads that serve connections.
//!
//! Two buffers take turns: the daemon appends to one while the thread writes the other,
//! so a line costs one copy and no allocation. What waits is bounded in bytes
//! ([`BACKLOG_BYTES`]), not in lines: a flood of long lines cannot hold more memory than
//! a flood of short ones. A line that does not fit is dropped whole and counted
//! (`achat_log_lines_dropped_total`).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing_subscriber::fmt::MakeWriter;

/// Most bytes of log lines waiting to be written; past it, lines are dropped (counted).
pub const BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// A buffer that grew past this during a burst is given back once written.
const KEEP_BYTES: usize = 64 * 1024;

/// What the daemon's threads and the writing thread share.
struct Shared {
    /// The lines waiting to be written.
    pending: Mutex<Pending>,
    /// Tells the writing thread that lines are waiting, or that logging has ended.
    ready: Condvar,
    /// Lines dropped because the backlog was full.
    dropped: AtomicU64,
}

struct Pending {
    /// Whole lines, as the formatter wrote them, oldest first.
    lines: Vec<u8>,
    /// Set by [`Guard`]: the thread writes what is left and ends.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one line (the formatter writes each event with one call), or drops it
    /// whole when the backlog has no room for it.
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.closed || pending.lines.len() + line.len() > BACKLOG_BYTES {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.ready.notify_one();
        }
    }
}

/// Hands formatted lines to the writing thread ([`start`]); what the subscriber writes to.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// The writer of one event.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.shared)
    }
}

/// Counts the lines dropped because the backlog was full.
#[derive(Clone)]
pub struct Dropped(Arc<Shared>);

impl Dropped {
    pub fn dropped_lines(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Ends logging when dropped: the thread writes every line queued before, then stops.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread that writes the log lines to `out`.
pub fn start<W: Write + Send + 'static>(out: W) -> (LogWriter, Dropped, Guard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            lines: Vec::new(),
            closed: false,
        }),
        ready: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let writing = shared.clone();
    let thread = std::thread::Builder::new()
        .name("a-chat-log".into())
        .spawn(move || write_out(&writing, out))
        .ok();
    let writer = LogWriter {
        shared: shared.clone(),
    };
    let guard = Guard {
        shared: shared.clone(),
        thread,
    };
    (writer, Dropped(shared), guard)
}

/// The writing thread: takes the whole backlog at once (giving the daemon the other
/// buffer to fill meanwhile) and writes it, until the guard ends logging.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            while pending.lines.is_empty() && !pending.closed {
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if pending.lines.is_empty() {
                return;
            }
            std::mem::swap(&mut pending.lines, &mut batch);
        }
        // Nowhere to report a failed write of the log: the lines are lost, as they would
        // be with the reader gone.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        batch.shrink_to(KEEP_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that keeps what was written, and can be held shut to build a backlog.
    #[derive(Clone, Default)]
    struct Out {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let out = Out::default();
        let (writer, dropped, guard) = start(out.clone());
        for i in 0..10_000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let written = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert_eq!(dropped.dropped_lines(), 0);
    }

    #[test]
    fn a_full_backlog_drops_whole_lines_and_counts_them() {
        let out = Out::default();
        let shut = out.gate.lock().unwrap();
        let (writer, dropped, guard) = start(out.clone());
        // The thread may take one line before it blocks on the shut output; after that
        // the backlog fills to its bound.
        let line = vec![b'x'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let sent = 3 * BACKLOG_BYTES / line.len();
        for _ in 0..sent {
            writer.make_writer().write_all(&line).unwrap();
        }
        // The thread took one batch before it blocked on the shut output; then the
        // backlog filled to its bound: at most two backlogs' worth got through.
        let lost = dropped.dropped_lines() as usize;
        assert!(
            lost >= sent - 2 * BACKLOG_BYTES / line.len(),
            "dropped {lost} of {sent}"
        );
        drop(shut);
        drop(guard);
        let written = out.written.lock().unwrap().clone();
        assert_eq!(
            written.len(),
            (sent - lost) * line.len(),
            "only whole lines"
        );
        assert!(written.chunks(line.len()).all(|l| l == line.as_slice()));
    }
}
