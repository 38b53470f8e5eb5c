//! The seam to the async runtime. Everything runtime-specific that a-chat uses (spawning,
//! sleeping, timeouts, sockets) goes through this module, so moving to another runtime
//! changes this file and nothing else.

use std::future::Future;
use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};

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

/// Has the kernel end a connection whose peer vanished without a FIN or a reset (a dropped
/// Wi-Fi, a NAT that forgot it) within about `within`, so that its login is freed: TCP
/// keepalive probes after `within / 2` of silence, one every `within / 8`, and
/// `TCP_USER_TIMEOUT` of `within`, which ends the connection once that long has passed
/// without an acknowledgement (of data or of a probe). The probes are the kernel's: an idle
/// client that is alive costs one small packet each way per probe, and a-chat's tasks never
/// wake for them. The reader then sees ETIMEDOUT. Zero turns all of it off.
fn set_dead_peer_timeout(stream: &std::net::TcpStream, within: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if within.is_zero() {
        return Ok(());
    }
    let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(within / 2)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(within / 8)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4),
        (
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            within.as_millis().min(i32::MAX as u128) as libc::c_int,
        ),
    ];
    for (level, name, value) in options {
        // SAFETY: a valid descriptor, and a pointer to a c_int with its size.
        let r = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An accepted chat connection's socket, shared by its reader, its writer and its queue:
/// plain, or TLS after a handshake (see [`Conn::into_tls`]).
///
/// It sits directly on the reactor that async-std itself runs on (async-io), which also
/// offers a readiness wait: a reader that has just emptied a plain socket waits for the
/// next readiness event instead of paying a `read` that can only say "would block".
#[derive(Clone)]
pub struct Conn {
    /// The TCP socket, for plain reads and writes and for shutting it down.
    sock: Arc<async_io::Async<std::net::TcpStream>>,
    /// The TLS session over `sock`, on a TLS listener. Reader and writer share it: each
    /// call locks it for one poll and never across a wait. `None` on a plain listener,
    /// which pays one pointer for it and nothing else.
    tls: Option<Arc<Mutex<TlsServerStream>>>,
}

/// The server side of an accepted TLS connection: a rustls session over a [`Sock`].
pub type TlsServerStream = futures_rustls::server::TlsStream<Sock>;

/// The TCP socket under a TLS session (rustls reads and writes the records through it).
pub struct Sock(Arc<async_io::Async<std::net::TcpStream>>);

impl Sock {
    /// Copies what has arrived into `buf` without taking it from the socket, waiting until
    /// something has (0: the client closed).
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.peek(buf).await
    }
}

impl AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

impl Conn {
    /// Takes over a socket from the listener and turns off Nagle's algorithm (the
    /// writer batches by itself). Fails if the client is already gone.
    pub fn from_accepted(stream: TcpStream, dead_peer: Duration) -> io::Result<Conn> {
        let stream = std::net::TcpStream::try_from(stream)?;
        stream.set_nodelay(true)?;
        set_dead_peer_timeout(&stream, dead_peer)?;
        Ok(Conn {
            sock: Arc::new(async_io::Async::new(stream)?),
            tls: None,
        })
    }

    /// The socket, for a TLS handshake over it.
    pub fn sock(&self) -> Sock {
        Sock(self.sock.clone())
    }

    /// The client's certificate (the first of its chain), on a TLS connection that
    /// presented one.
    pub fn peer_certificate(&self) -> Option<rustls_pki_types::CertificateDer<'static>> {
        let tls = self.tls.as_ref()?;
        let session = tls.lock().unwrap_or_else(|e| e.into_inner());
        let first = session.get_ref().1.peer_certificates()?.first()?;
        Some(first.clone().into_owned())
    }

    /// The same connection, reading and writing through the TLS session `stream` (made
    /// by a handshake over [`Conn::sock`]).
    pub fn into_tls(self, stream: TlsServerStream) -> Conn {
        Conn {
            sock: self.sock,
            tls: Some(Arc::new(Mutex::new(stream))),
        }
    }

    /// True for a TLS connection: its reads may find data that rustls already holds, so a
    /// readiness wait on the socket would be wrong.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Copies what has arrived into `buf` without taking it from the socket, waiting until
    /// something has (0: the client closed). For a PROXY header, which comes before any TLS.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.peek(buf).await
    }

    /// Resolves once the peer has closed (or reset) its side; stays pending for good once
    /// it has sent anything, which is left in the socket for a later read.
    pub async fn closed(&self) {
        let mut byte = [0u8; 1];
        if let Ok(1..) = self.sock.peek(&mut byte).await {
            futures::future::pending::<()>().await;
        }
    }

    /// Resolves once the socket has new data (or an end, or an error) to read.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Reads what is there into `buf`, or registers the task to be woken when there is.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &self.tls {
            None => Pin::new(&mut &*self.sock).poll_read(cx, buf),
            Some(tls) => Pin::new(&mut *lock(tls)).poll_read(cx, buf),
        }
    }

    /// Reads what is there, waiting only when nothing is.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        futures::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads what the kernel (or the TLS session) already holds, without waiting: `Ok(0)`
    /// when nothing is there.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            return match self.poll_read(&mut cx, buf) {
                Poll::Ready(result) => result,
                Poll::Pending => Ok(0),
            };
        }
        match self.sock.get_ref().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    /// Writes what the socket takes at once, without waiting: how many bytes of `buf`
    /// were taken, and whether they are all on their way (on a TLS connection, also
    /// flushed out of the session). When not, [`Conn::write_all`] of the rest (empty on
    /// a TLS connection whose records wait to be flushed) finishes the write.
    pub fn write_now(&self, buf: &[u8]) -> io::Result<(usize, bool)> {
        let Some(tls) = &self.tls else {
            return match io::Write::write(&mut self.sock.get_ref(), buf) {
                Ok(n) => Ok((n, n == buf.len())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((0, buf.is_empty())),
                Err(e) => Err(e),
            };
        };
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut stream = lock(tls);
        let mut taken = 0;
        while taken < buf.len() {
            match Pin::new(&mut *stream).poll_write(&mut cx, &buf[taken..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok((taken, false)),
            }
        }
        match Pin::new(&mut *stream).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Ok((taken, true)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok((taken, false)),
        }
    }

    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return (&*self.sock).write_all(buf).await;
        };
        let mut written = 0;
        while written < buf.len() {
            let n = futures::future::poll_fn(|cx| {
                Pin::new(&mut *lock(tls)).poll_write(cx, &buf[written..])
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += n;
        }
        futures::future::poll_fn(|cx| Pin::new(&mut *lock(tls)).poll_flush(cx)).await
    }

    /// Shuts the socket down. On a TLS connection, shutting down the writing side first
    /// queues the session's close_notify, sent if the socket takes it at once.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let (Some(tls), Shutdown::Write) = (&self.tls, how) {
            let mut stream = lock(tls);
            stream.get_mut().1.send_close_notify();
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let _ = Pin::new(&mut *stream).poll_flush(&mut cx);
        }
        self.sock.get_ref().shutdown(how)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poll of the TLS session never panics halfway in a way that matters here; if one
    // ever did, the connection would fail on its next read or write.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
