//! `GET /connections`'s query against the real binary: `login=` finds a login by its look,
//! as the chat finds recipients (`Alice` finds `alice`), and a query it cannot answer
//! (an unknown sort, a bad limit, an unknown parameter) gets a 400 that says why instead
//! of an answer to another question.
mod common;

use common::http::http_get;
use common::Daemon;

#[test]
fn login_is_matched_by_its_look_and_a_bad_query_is_a_400_with_the_reason() {
    let mut d = Daemon::with_toml("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let admin = d.admin_addr();
    let _alice = d.login("alice");
    let _bob = d.login("bob");
    for spelling in ["alice", "Alice", "ALICE"] {
        let response = http_get(admin, &format!("/connections?login={spelling}"));
        assert_eq!(response.status, 200, "{}", response.text());
        let body: serde_json::Value = serde_json::from_str(&response.text()).unwrap();
        assert_eq!(body["total"], 1, "login={spelling}: {body}");
        assert_eq!(body["connections"][0]["login"], "alice", "{body}");
    }
    for (query, why) in [
        ("?sort=queud", "sort by queued"),
        ("?limit=ten", "a number from 0 to 1000"),
        ("?limit=-1", "a number from 0 to 1000"),
        ("?limit=5000", "a number from 0 to 1000"),
        ("?lmit=5", "not a parameter of /connections"),
    ] {
        let response = http_get(admin, &format!("/connections{query}"));
        assert_eq!(response.status, 400, "{query}: {}", response.text());
        assert!(
            response.text().contains(why),
            "{query}: {}",
            response.text()
        );
    }
    let response = http_get(admin, "/connections?sort=since&limit=1000");
    assert_eq!(response.status, 200, "{}", response.text());
}
