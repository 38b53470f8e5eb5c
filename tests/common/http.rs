//! A minimal HTTP client for the admin endpoint's tests, and `/metrics` samples.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::WAIT;

/// An HTTP response as the admin endpoint sent it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code from the status line.
    pub status: u16,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Empty for HEAD requests.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (raw bytes) on a new connection and reads one response: its head,
/// then `Content-Length` bytes of body, or up to the end of the stream without one.
/// `None` if the server closed or reset without answering. Panics after WAIT.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> Option<HttpResponse> {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to admin");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    (&stream).write_all(request).expect("send request");
    let mut reader = BufReader::new(stream);
    read_http_response(&mut reader, request.starts_with(b"HEAD "))
}

/// Reads one response from `reader` (see [`http_raw`]).
pub fn read_http_response(
    reader: &mut BufReader<TcpStream>,
    head_only: bool,
) -> Option<HttpResponse> {
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading a status line: {e}"),
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reading a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header without a colon");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("content-length"));
    let mut body = Vec::new();
    match (head_only, length) {
        (true, _) => {}
        (false, Some(n)) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).expect("reading a body");
        }
        (false, None) => {
            reader.read_to_end(&mut body).expect("reading a body");
        }
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `GET path` with `Connection: close`; panics if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: a-chat\r\nConnection: close\r\n\r\n");
    http_raw(addr, request.as_bytes()).unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// Scrapes `/metrics` and returns every sample as (name with labels, value), e.g.
/// `("achat_connections_refused_total{reason=\"login_taken\"}", 1.0)`.
pub fn scrape(admin: SocketAddr) -> Vec<(String, f64)> {
    samples_of(http_get(admin, "/metrics"))
}

/// [`scrape`] of an endpoint that wants a bearer token.
pub fn scrape_with(admin: SocketAddr, token: &str) -> Vec<(String, f64)> {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: a-chat\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    samples_of(http_raw(admin, request.as_bytes()).expect("an answer to GET /metrics"))
}

fn samples_of(response: HttpResponse) -> Vec<(String, f64)> {
    assert_eq!(response.status, 200, "{}", response.text());
    response
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample line");
            (name.to_owned(), value.parse().expect("a sample value"))
        })
        .collect()
}

/// The value of the sample `name` (with labels, if any) in a scrape.
pub fn sample(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

/// Scrapes until every expected sample has its value (the writer counts a delivery
/// just after the client can read it), up to WAIT; then asserts them all.
pub fn assert_samples(admin: SocketAddr, expected: &[(&str, f64)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(admin);
        let all = expected
            .iter()
            .all(|(name, value)| sample(&samples, name) == *value);
        if all || Instant::now() >= deadline {
            for (name, value) in expected {
                assert_eq!(sample(&samples, name), *value, "{name}");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scrapes until `ready` holds for the samples (a counter that the daemon moves just after
/// the client saw what it counts), up to WAIT; returns the last scrape either way.
pub fn scrape_until(
    admin: SocketAddr,
    ready: impl Fn(&[(String, f64)]) -> bool,
) -> Vec<(String, f64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(admin);
        if ready(&samples) || Instant::now() >= deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
