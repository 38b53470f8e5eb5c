//! The WebSocket listener's first exchange over a carrier (a TCP socket or a TLS session):
//! reads one request head, answers it (see `http`), and hands back a session when the
//! request asked to upgrade. The caller bounds it in time (`login_timeout`).

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::http::{self, Answer, Front};
use super::session::{self, Session};
use crate::metrics::WsAnswer;

/// How a request ended.
pub enum Outcome<S> {
    /// It asked for a session and got one.
    Session(Box<Session<S>>),
    /// It was answered (the page, or a refusal) and closed.
    Answered(WsAnswer),
    /// The client closed or failed before a whole request.
    Gone,
}

/// Reads a request head from `carrier` and answers it.
pub async fn upgrade<S>(mut carrier: S, front: &Front, tls: bool, max_line: usize) -> Outcome<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = http::head_end(&head) {
            break end;
        }
        if head.len() >= http::MAX_HEAD_BYTES {
            let answer = http::refusal(431, "a request head may be at most 8 KiB");
            return respond(carrier, answer).await;
        }
        let room = (http::MAX_HEAD_BYTES - head.len()).min(chunk.len());
        match carrier.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Outcome::Gone,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    };
    match http::answer(&head[..end], front, tls) {
        Answer::Upgrade(switch) => {
            if carrier.write_all(&switch).await.is_err() || carrier.flush().await.is_err() {
                return Outcome::Gone;
            }
            // A client may send its first frames right behind the request.
            let early = head.split_off(end);
            let config = Some(session::config(max_line));
            let role = async_tungstenite::tungstenite::protocol::Role::Server;
            let ws = async_tungstenite::WebSocketStream::from_partially_read(
                carrier, early, role, config,
            )
            .await;
            Outcome::Session(Box::new(Session::new(ws)))
        }
        answer => respond(carrier, answer).await,
    }
}

/// Writes a whole answer and closes.
async fn respond<S: AsyncWrite + Unpin>(mut carrier: S, answer: Answer) -> Outcome<S> {
    let Answer::Respond(bytes, kind) = answer else {
        return Outcome::Gone;
    };
    let _ = carrier.write_all(&bytes).await;
    let _ = carrier.close().await;
    Outcome::Answered(kind)
}
