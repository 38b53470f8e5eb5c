//! The seam to the async runtime. Everything runtime-specific that a-chat uses (spawning,
//! sleeping, timeouts, sockets) goes through this module, so moving to another runtime
//! changes this file and nothing else.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

mod halves;

pub use async_std::net::{TcpListener, TcpStream};
pub use async_std::task::JoinHandle;
pub use halves::{join_halves, JoinHalves, Wakes};

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

/// Lowers the calling thread's CPU priority (nice 10 on Linux, for this thread only), for
/// CPU-heavy work such as password hashing beside the threads that serve connections.
pub fn lower_thread_priority() {
    // SAFETY: gettid and setpriority on the calling thread have no preconditions; a
    // failure (e.g. a sandbox that forbids it) leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
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

/// Starts a task that nobody waits for or names, such as a connection's. Unlike
/// [`spawn`], it carries none of async-std's task-locals (a task id and a locals map, 40
/// bytes of every connection), and runs on the same executor and threads.
pub fn spawn_detached<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    async_global_executor::spawn(future).detach();
}

/// Runs `work` (CPU-bound or blocking) on the runtime's pool of blocking threads, away
/// from the threads that run connections, and waits for its result.
pub async fn spawn_blocking<F, T>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    async_std::task::spawn_blocking(work).await
}

/// Threads of their own, apart from the ones that serve connections, running an executor
/// that tasks are spawned on from any thread; see [`spawn_apart`] and [`spawn_beside`].
struct Apart {
    /// The executor the threads run.
    executor: Arc<async_executor::Executor<'static>>,
}

impl Apart {
    /// Starts `threads` threads named `name`, at a lower priority when `lower`.
    fn start(name: &str, threads: usize, lower: bool) -> Apart {
        let executor = Arc::new(async_executor::Executor::new());
        for _ in 0..threads.max(1) {
            let executor = executor.clone();
            let started = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    if lower {
                        lower_thread_priority();
                    }
                    async_io::block_on(executor.run(futures::future::pending::<()>()))
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a thread apart from the chat's");
            }
        }
        Apart { executor }
    }
}

/// Runs `future` on threads apart from the ones that serve connections (one per core but
/// one, at nice 10), for CPU-heavy async work an outsider can make a-chat spend, such as
/// a TLS handshake. The future's sockets work there as anywhere (the reactor is shared).
/// Dropping the handle cancels the work.
pub fn spawn_apart<F>(future: F) -> ApartTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static APART: std::sync::OnceLock<Apart> = std::sync::OnceLock::new();
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    let apart = APART.get_or_init(|| Apart::start("a-chat-apart", cores() - 1, true));
    ApartTask(apart.executor.spawn(future))
}

/// Runs `future` on one thread of its own beside the ones that serve connections, at
/// their priority: for I/O that is part of the chat but reads at a rate others choose
/// (the cluster's Redis connections, which anyone who can publish to Redis can flood), so
/// that it can neither stall the chat's thread nor be starved below it. Dropping the
/// handle cancels the work.
pub fn spawn_beside<F>(future: F) -> ApartTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static BESIDE: std::sync::OnceLock<Apart> = std::sync::OnceLock::new();
    let beside = BESIDE.get_or_init(|| Apart::start("a-chat-link", 1, false));
    ApartTask(beside.executor.spawn(future))
}

/// The handle of [`spawn_apart`]'s or [`spawn_beside`]'s work: awaiting it gives the
/// output; dropping it cancels.
pub struct ApartTask<T>(async_executor::Task<T>);

impl<T> ApartTask<T> {
    /// Lets the work run to its end without a handle to wait for it.
    pub fn detach(self) {
        self.0.detach();
    }
}

impl<T> Future for ApartTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
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

/// Connects to `host:port`, resolving the name first (the cluster's Redis).
pub async fn connect_host(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to the unix socket at `path` (the cluster's Redis on this host).
pub async fn connect_unix(
    path: &std::path::Path,
) -> io::Result<async_std::os::unix::net::UnixStream> {
    async_std::os::unix::net::UnixStream::connect(path).await
}

mod conn;
mod layer;
mod sock;
mod tls_records;
mod tls_stream;
pub use conn::Conn;
pub use layer::{Carrier, TlsServerStream};
pub use sock::Sock;
pub use tls_stream::accept as tls_accept;
