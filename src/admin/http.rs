//! The admin endpoint's HTTP/1.1: reading and parsing a request head (with `httparse`),
//! and writing a response. No bodies are read: the endpoint takes none.

use futures::{AsyncRead, AsyncReadExt};
use tracing::debug;

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers in one request; more gets 431.
pub(super) const MAX_HEADERS: usize = 32;
/// Bytes asked of each `read`.
pub(super) const READ_CHUNK: usize = 4096;

/// The parts of a request head the endpoint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    /// GET and HEAD are served; anything else on a known path gets 405.
    pub(super) method: String,
    /// The path without its query string.
    pub(super) path: String,
    /// The query string (after `?`), empty when there is none.
    pub(super) query: String,
    /// The client asked to keep the connection open (HTTP/1.1 unless `Connection: close`;
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub(super) keep_alive: bool,
    /// The request announces a body (`Content-Length` > 0 or `Transfer-Encoding`): the
    /// endpoint takes none, so it answers and closes.
    pub(super) has_body: bool,
    /// The `Accept` header asks for OpenMetrics (what Prometheus servers send).
    pub(super) openmetrics: bool,
    /// The `Authorization` header's value, for the token check.
    pub(super) authorization: Option<String>,
    /// Bytes of the head, to remove from the buffer.
    pub(super) head_len: usize,
}

/// How reading one request head ended.
#[derive(Debug)]
pub(super) enum Head {
    Request(Request),
    /// The client closed (or failed) between requests.
    Closed,
    /// Not HTTP/1.x (400).
    Malformed(&'static str),
    /// Over MAX_HEAD_BYTES or MAX_HEADERS (431).
    TooLarge,
}

/// Reads until `buf` holds a complete request head (or proves not to).
pub(super) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Head {
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Ok(Some(request)) => return Head::Request(request),
                Ok(None) => {}
                Err(httparse::Error::TooManyHeaders) => return Head::TooLarge,
                Err(e) => return Head::Malformed(error_text(e)),
            }
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Head::TooLarge;
        }
        let start = buf.len();
        let want = READ_CHUNK.min(MAX_HEAD_BYTES - start);
        buf.resize(start + want, 0);
        let read = stream.read(&mut buf[start..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        if n == 0 {
            if let Err(e) = read {
                debug!(error = %e, "read failed");
            }
            return Head::Closed;
        }
    }
}

fn error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// `Ok(Some)` for a complete head, `Ok(None)` when more bytes are needed.
pub(super) fn parse(buf: &[u8]) -> Result<Option<Request>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(httparse::Error::Token);
    };
    let mut keep_alive = version == 1;
    let mut has_body = false;
    let mut openmetrics = false;
    let mut authorization = None;
    for header in req.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            has_body |= value != "0";
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if header.name.eq_ignore_ascii_case("accept") {
            openmetrics |= accepts_openmetrics(value);
        } else if header.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_owned());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        keep_alive,
        has_body,
        openmetrics,
        authorization,
        head_len,
    }))
}

/// True when an `Accept` value lists `application/openmetrics-text` with a non-zero q.
pub(super) fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let q = params
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// A complete response: status line, headers, and the body unless `head_only`.
pub(super) fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
    extra_headers: Option<&str>,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {connection}\r\n{}\r\n",
        body.len(),
        extra_headers.unwrap_or_default(),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}
