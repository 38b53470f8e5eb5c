//! The seam to the async runtime. Everything runtime-specific that a-chat uses (spawning,
//! sleeping, timeouts, sockets) goes through this module, so moving to another runtime
//! changes this file and nothing else.

use std::future::Future;
use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};

pub use async_std::net::{TcpListener, TcpStream};
pub use async_std::task::JoinHandle;

/// Sets how many threads run spawned tasks (0: one per CPU core). Takes effect only
/// before the first task is spawned; the `ASYNC_STD_THREAD_COUNT` environment variable,
/// when set, wins.
pub fn init_workers(threads: usize) {
    let mut config = async_global_executor::GlobalExecutorConfig::default()
        .with_env_var("ASYNC_STD_THREAD_COUNT")
        .with_thread_name_fn(|| "a-chat-worker".to_string());
    if threads > 0 {
        config = config.with_min_threads(threads);
    }
    async_global_executor::init_with_config(config);
}

/// Runs a future to completion on the current thread (the program's entry points).
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(future)
}

/// Starts a task in the background.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    async_std::task::spawn(future)
}

/// Waits for `duration`.
pub async fn sleep(duration: Duration) {
    async_std::task::sleep(duration).await
}

/// `Ok(output)` if `future` finishes within `duration`, `Err(Elapsed)` otherwise.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    async_std::future::timeout(duration, future)
        .await
        .map_err(|_| Elapsed)
}

/// A timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Binds a listening socket whose accept queue holds `backlog` connections (the kernel
/// caps it at `net.core.somaxconn`; see [`somaxconn`]).
pub async fn bind(addr: std::net::SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind(addr).await?;
    // The standard library listens with a backlog of 128; listening again on the bound
    // socket sets ours (Linux takes the new value for a socket already listening).
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: the descriptor is the listener's own and stays open for the call.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// The kernel's cap on every listening socket's backlog (`net.core.somaxconn`), where
/// it can be read.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Connects to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// An accepted chat connection's socket, shared by its reader, its writer and its queue.
///
/// It sits directly on the reactor that async-std itself runs on (async-io), which also
/// offers a readiness wait: a reader that has just emptied the socket waits for the next
/// readiness event instead of paying a `read` that can only say "would block".
#[derive(Clone)]
pub struct Conn(Arc<async_io::Async<std::net::TcpStream>>);

impl Conn {
    /// Takes over a socket from the listener and turns off Nagle's algorithm (the
    /// writer batches by itself). Fails if the client is already gone.
    pub fn from_accepted(stream: TcpStream) -> io::Result<Conn> {
        let stream = std::net::TcpStream::try_from(stream)?;
        stream.set_nodelay(true)?;
        Ok(Conn(Arc::new(async_io::Async::new(stream)?)))
    }

    /// Resolves once the socket has new data (or an end, or an error) to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    /// Reads what is there into `buf`, or registers the task to be woken when there is.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }

    /// Reads what is there, waiting only when nothing is.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf).await
    }

    /// Reads what the kernel already holds, without waiting: `Ok(0)` when nothing is there.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.get_ref().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&*self.0).write_all(buf).await
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.get_ref().shutdown(how)
    }
}
