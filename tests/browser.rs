//! The chat page in a real browser (ARCHITECTURE §14): headless Chromium, driven over
//! WebDriver by Debian's chromedriver, against the real binary. Two browser windows log
//! in and chat with each other and with a TCP client; markup in a message shows as its
//! characters; the screenshots are kept (in `$A_CHAT_SCREENSHOTS`, by default
//! `target/screenshots`).
//!
//! Without chromium and chromium-driver the test says so and passes, unless
//! `A_CHAT_BROWSER_TEST=required` (as CI sets it, after installing them).

mod common;

use std::path::PathBuf;

use common::webdriver::{find_browser, Driver, Session};
use common::Daemon;

/// Logs in through the page's form and waits until the page says it is connected.
fn log_in(window: &Session, url: &str, name: &str) {
    window.goto(url);
    window.type_into("#login-name", name);
    window.click("#login-button");
    window.wait_text("#status", &format!("connected as {name}"));
}

fn say(window: &Session, line: &str) {
    window.type_into("#line", line);
    window.click("#send");
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("A_CHAT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

#[test]
fn two_browsers_and_a_tcp_client_chat_through_the_page() {
    let Some((driver, browser)) = find_browser() else {
        let required = std::env::var("A_CHAT_BROWSER_TEST").as_deref() == Ok("required");
        assert!(
            !required,
            "A_CHAT_BROWSER_TEST=required, but chromium and chromedriver are not installed"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let mut d = Daemon::with_toml("[websocket]\nlisten = \"127.0.0.1:0\"\n");
    let url = format!("http://{}/", d.ws_addr(false));
    let driver = Driver::start(&driver, browser);
    // A phone-sized window and a desktop one.
    let alice = driver.session(390, 844);
    let bob = driver.session(1024, 768);
    log_in(&alice, &url, "alice");
    log_in(&bob, &url, "bob");
    let mut carol = d.login("carol");

    say(&alice, "bob: hello from alice's phone");
    bob.wait_text("#messages", "from alice: hello from alice's phone");
    say(&bob, "alice, carol: hello from bob's desktop");
    alice.wait_text("#messages", "from bob: hello from bob's desktop");
    carol.expect("from bob: hello from bob's desktop");
    carol.send("alice, bob: hi from a terminal");
    alice.wait_text("#messages", "from carol: hi from a terminal");
    bob.wait_text("#messages", "from carol: hi from a terminal");
    say(&alice, "carol: hi back from the page");
    carol.expect("from alice: hi back from the page");

    // Markup is shown as its characters, never run or rendered.
    let attack = "<img src=x onerror=\"document.title='owned'\">";
    carol.send(&format!("alice, bob: {attack}"));
    for window in [&alice, &bob] {
        window.wait_text("#messages", &format!("from carol: {attack}"));
        assert!(
            window.find_all("#messages img").is_empty(),
            "an <img> was made"
        );
        assert_eq!(window.script("return document.title;"), "a-chat");
    }
    // Errors show too.
    say(&bob, "nobody-here: anyone?");
    bob.wait_text("#messages", "error: no such user \"nobody-here\"");

    let dir = screenshots();
    std::fs::write(dir.join("browser-alice-phone.png"), alice.screenshot()).unwrap();
    std::fs::write(dir.join("browser-bob-desktop.png"), bob.screenshot()).unwrap();

    // The drain notice reaches the page, and the page says it is disconnected.
    d.signal(libc::SIGTERM);
    alice.wait_text("#messages", "notice: server shutting down");
    alice.wait_text("#status", "disconnected");
    let mut carol_rest = Vec::new();
    while let Some(line) = carol.line() {
        carol_rest.push(line);
    }
    assert_eq!(carol_rest, vec!["notice: server shutting down".to_owned()]);
}

#[test]
fn the_page_asks_for_a_password_when_logins_take_one() {
    let Some((driver, browser)) = find_browser() else {
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let users = common::users::UsersFile::new(&[("dora", "correct horse")]);
    let mut d = Daemon::with_toml(&format!(
        "[websocket]\nlisten = \"127.0.0.1:0\"\n[auth]\nusers_file = \"{}\"\n",
        users.path.display()
    ));
    let url = format!("http://{}/", d.ws_addr(false));
    let driver = Driver::start(&driver, browser);
    let dora = driver.session(390, 844);
    dora.goto(&url);
    assert_eq!(
        dora.script("return document.getElementById('password-row').hidden;"),
        false
    );
    dora.type_into("#login-name", "dora");
    dora.type_into("#login-password", "correct horse");
    dora.click("#login-button");
    dora.wait_text("#status", "connected as dora");
    say(&dora, "dora: me");
    dora.wait_text("#messages", "from dora: me");
    // The password is not left in the page once sent.
    assert_eq!(
        dora.script("return document.getElementById('login-password').value;"),
        ""
    );
    drop(d);
}
