//! Tests of the admin endpoint's pure parts (src/admin.rs): request parsing, answers,
//! the two /metrics formats.

use super::*;

/// A daemon that has no connections and whose reloads all fail.
struct Idle;

impl Control for Idle {
    fn connections(&self, _query: &str) -> Result<String, QueryError> {
        Ok("{}".into())
    }
    fn reload(&self) -> futures::future::BoxFuture<'static, Reloaded> {
        Box::pin(async { Reloaded::Failed("no file".into()) })
    }
    fn close(&self, _conn: u64, _reason: Option<&str>, _by: &str) -> Option<Closing> {
        None
    }
    fn close_login(&self, _login: &str, _reason: Option<&str>, _by: &str) -> Vec<Closing> {
        Vec::new()
    }
    fn lame_duck(&self, _by: &str) -> bool {
        false
    }
    fn drain(&self, _by: &str) -> bool {
        false
    }
    fn bans(&self) -> String {
        "{\"bans\":[]}\n".into()
    }
    fn ban(&self, _ban: BanOrder, _by: &str) -> Result<String, crate::server::bans::BanError> {
        Err(crate::server::bans::BanError::Full)
    }
    fn lift(&self, _id: u64, _by: &str) -> bool {
        false
    }
}

fn shared() -> Shared {
    let control: Arc<dyn Control> = Arc::new(Idle);
    Shared {
        connections: connections::Answers::new(control.clone()),
        control,
        gate: Arc::new(Gate::new(None, Vec::new())),
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::new()),
        on_scrape: Box::new(|m| {
            m.log_lines_dropped(7);
        }),
    }
}

fn get(target: &str) -> Request {
    parse(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap()
        .unwrap()
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text[9..12].parse().unwrap()
}

#[test]
fn heads_parse_incrementally() {
    let full = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET";
    for cut in 1..full.len() - 3 {
        assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
    }
    let r = parse(full).unwrap().unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/metrics");
    assert!(!r.keep_alive);
    assert!(!r.has_body);
    assert_eq!(r.head_len, full.len() - 3);
}

#[test]
fn keep_alive_and_bodies() {
    assert!(get("/").keep_alive);
    let r = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!r.keep_alive);
    let r = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(r.keep_alive);
    let r = parse(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap()
        .unwrap();
    assert!(r.has_body);
    let r = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(r.has_body);
}

#[test]
fn garbage_and_too_many_headers_are_errors() {
    assert!(parse(b"\x16\x03\x01\x02\x00 hello\r\n\r\n").is_err());
    assert!(parse(b"GET / HTTP/2.0\r\n\r\n").is_err());
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("h{i}: v\r\n"))
        .collect();
    let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse(req.as_bytes()), Err(httparse::Error::TooManyHeaders));
}

#[test]
fn routes_methods_and_readiness() {
    let s = shared();
    assert_eq!(status_of(&answer(&get("/healthz"), &s, false, None)), 200);
    assert_eq!(status_of(&answer(&get("/nope"), &s, false, None)), 404);
    assert_eq!(status_of(&answer(&get("/readyz"), &s, false, None)), 503);
    s.health.set_ready();
    assert_eq!(status_of(&answer(&get("/readyz"), &s, false, None)), 200);
    s.health.set_draining();
    s.health.set_ready();
    assert_eq!(status_of(&answer(&get("/readyz"), &s, false, None)), 503);
    let mut post = get("/metrics");
    post.method = "POST".into();
    let a = answer(&post, &s, true, None);
    assert_eq!(status_of(&a), 405);
    assert!(String::from_utf8_lossy(&a).contains("Allow: GET, HEAD\r\n"));
    let metrics = answer(&get("/metrics"), &s, false, None);
    let text = String::from_utf8(metrics).unwrap();
    assert!(text.contains(PROMETHEUS_TEXT), "{text}");
    assert!(text.contains("achat_log_lines_dropped_total 7"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    let mut om = get("/metrics");
    om.openmetrics = true;
    let text = String::from_utf8(answer(&om, &s, false, None)).unwrap();
    assert!(text.contains(OPENMETRICS), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn accept_negotiates_openmetrics() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(accepts_openmetrics(prometheus));
    assert!(accepts_openmetrics("Application/OpenMetrics-Text"));
    assert!(!accepts_openmetrics("*/*"));
    assert!(!accepts_openmetrics("text/plain"));
    assert!(!accepts_openmetrics("application/openmetrics-text;q=0"));
    let r = parse(format!("GET /metrics HTTP/1.1\r\nAccept: {prometheus}\r\n\r\n").as_bytes())
        .unwrap()
        .unwrap();
    assert!(r.openmetrics);
}

#[test]
fn head_has_the_length_but_no_body() {
    let s = shared();
    let mut head = get("/healthz");
    head.method = "HEAD".into();
    let a = String::from_utf8(answer(&head, &s, false, None)).unwrap();
    assert!(a.contains("Content-Length: 3\r\n"), "{a}");
    assert!(a.ends_with("\r\n\r\n"), "{a}");
}
