//! A small WebDriver client (W3C WebDriver over HTTP, JSON bodies) for driving headless
//! Chromium through Debian's `chromedriver`: sessions, navigation, elements, keys, clicks,
//! text and screenshots. Just what the browser test needs, over a std socket.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::read_http_response;
use super::{free_addr, WAIT};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` and `chromium`, when both are installed.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"]
                .iter()
                .map(|dir| PathBuf::from(dir).join(name))
                .find(|p| p.exists())
        })
    };
    Some((
        find(&["chromedriver"])?,
        find(&["chromium", "chromium-browser"])?,
    ))
}

/// A running `chromedriver`, stopped on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    browser: PathBuf,
}

impl Driver {
    pub fn start(driver: &PathBuf, browser: PathBuf) -> Driver {
        let addr = free_addr();
        let child = Command::new(driver)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            addr,
            browser,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(addr).is_ok() {
                let status = driver.call("GET", "/status", None);
                if status["value"]["ready"] == json!(true) {
                    return driver;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command: its `value`, or a panic that says what the driver answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let stream = TcpStream::connect(self.addr).expect("connect to chromedriver");
        // A new session starts a browser: more than WAIT on a loaded machine is possible.
        stream.set_read_timeout(Some(WAIT * 6)).unwrap();
        std::io::Write::write_all(&mut &stream, request.as_bytes()).unwrap();
        let answer = read_http_response(&mut BufReader::new(stream), false)
            .unwrap_or_else(|| panic!("chromedriver closed on {method} {path}"));
        let value: Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
        assert_eq!(answer.status, 200, "{method} {path}: {value}");
        value
    }

    /// A new headless browser window of `width` x `height` CSS pixels.
    pub fn session(&self, width: u32, height: u32) -> Session<'_> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": self.browser, "args": args},
        }}});
        let created = self.call("POST", "/session", Some(capabilities));
        let id = created["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Session { driver: self, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window; closed on drop.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        self.driver.call(method, &path, body)["value"].take()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The elements matching a CSS selector (possibly none).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        (found.as_array().expect("a list").iter())
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("not an element: {e}"))
                    .to_owned()
            })
            .collect()
    }

    fn find(&self, css: &str) -> String {
        let found = self.find_all(css);
        assert_eq!(found.len(), 1, "{css}: {} elements", found.len());
        found[0].clone()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// The rendered text of the element.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        let text = self.call("GET", &format!("/element/{element}/text"), None);
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (up to WAIT) until the element's text contains `want`; its text then.
    pub fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(css);
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?}; it shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a script in the page and returns its result.
    pub fn script(&self, source: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": source, "args": []})),
        )
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        let encoded = encoded.as_str().expect("base64");
        data_encoding::BASE64
            .decode(encoded.as_bytes())
            .expect("a PNG")
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.driver
                .call("DELETE", &format!("/session/{}", self.id), None)
        }));
    }
}
