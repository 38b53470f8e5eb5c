//! The seam to the async runtime. Everything runtime-specific that a-chat uses (spawning,
//! sleeping, timeouts, sockets) goes through this module, so moving to another runtime
//! changes this file and nothing else.

use std::future::Future;
use std::io;
use std::time::Duration;

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

/// Binds a listening socket.
pub async fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Connects to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect(addr).await
}

/// Turns off Nagle's algorithm on an accepted socket: the writer batches by itself.
pub fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}
