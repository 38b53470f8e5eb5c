//! Tests of the directory copy (`directory.rs`): events, snapshots, nodes leaving, and
//! a fuzz against a plain reference map.

use super::*;

fn login(node: &str, look: &str, login: &str) -> DirEvent {
    DirEvent::Login {
        node: node.into(),
        look: look.into(),
        login: login.into(),
    }
}

fn logout(node: &str, look: &str) -> DirEvent {
    DirEvent::Logout {
        node: node.into(),
        look: look.into(),
    }
}

fn owner(d: &Directory, name: &str) -> Option<String> {
    d.exact(name).map(|e| e.node.to_string())
}

#[test]
fn events_change_the_copy_and_own_ones_are_skipped() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.apply(login("n2", "alice", "Alice")).unwrap();
    d.apply(login("me", "bob", "bob")).unwrap();
    assert_eq!(owner(&d, "Alice"), Some("n2".into()));
    assert_eq!(d.by_look("alice").map(Entry::login), Some("Alice"));
    assert_eq!(owner(&d, "bob"), None);
    // A logout by a node that does not hold the login changes nothing.
    d.apply(logout("n3", "alice")).unwrap();
    assert_eq!(owner(&d, "Alice"), Some("n2".into()));
    d.apply(logout("n2", "alice")).unwrap();
    assert_eq!(owner(&d, "Alice"), None);
    assert!(d.is_empty());
}

#[test]
fn an_entry_keeps_its_login_and_its_canonical_form() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    for (look, name) in [("bob", "bob"), ("alice", "Alice"), ("ɑlice", "Ɑlice")] {
        d.apply(login("n2", look, name)).unwrap();
        let entry = d.by_look(look).expect("filed by its canonical form");
        assert_eq!((entry.login(), entry.look()), (name, look));
        assert_eq!(d.exact(name), Some(entry), "and by its login");
    }
    assert_eq!(
        &*d.by_look("bob").unwrap().names,
        "bob",
        "one string when the same"
    );
}

#[test]
fn entries_of_one_node_share_its_name_until_the_last_goes() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.apply(login("n2", "a", "a")).unwrap();
    d.apply(login("n2", "b", "b")).unwrap();
    let (a, b) = (d.exact("a").unwrap(), d.exact("b").unwrap());
    assert!(Arc::ptr_eq(&a.node, &b.node));
    assert_eq!(d.logins.nodes.get("n2"), Some(&2));
    d.apply(logout("n2", "a")).unwrap();
    d.apply(logout("n2", "b")).unwrap();
    assert!(
        d.logins.nodes.is_empty(),
        "a node that holds nothing is not kept"
    );
    d.apply(login("n2", "a", "a")).unwrap();
    d.apply(DirEvent::NodeGone { node: "n2".into() }).unwrap();
    assert!(d.logins.nodes.is_empty(), "a gone node's name is not kept");
}

/// A node holding a small share of the copy is removed entry by entry; one holding a
/// large share is cut out and the tables filed again. Either way the rest is found.
#[test]
fn a_gone_node_large_or_small_leaves_the_rest_findable() {
    for big in [10, 3000] {
        let mut d = Directory::new("me".into(), Caps::NONE);
        for i in 0..1000 {
            d.apply(login("n3", &format!("k{i}"), &format!("K{i}")))
                .unwrap();
        }
        for i in 0..big {
            d.apply(login("n2", &format!("g{i}"), &format!("g{i}")))
                .unwrap();
        }
        d.apply(DirEvent::NodeGone { node: "n2".into() }).unwrap();
        assert_eq!(d.len(), 1000);
        for i in 0..1000 {
            let entry = d.exact(&format!("K{i}")).expect("kept");
            assert_eq!(entry.look(), format!("k{i}"));
            assert!(d.by_look(&format!("k{i}")).is_some());
        }
        assert!(d.exact("g0").is_none() && d.by_look("g0").is_none());
    }
}

#[test]
fn a_gone_node_takes_all_its_logins() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.apply(login("n2", "a", "a")).unwrap();
    d.apply(login("n2", "b", "b")).unwrap();
    d.apply(login("n3", "c", "c")).unwrap();
    d.apply(DirEvent::NodeGone { node: "n2".into() }).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(owner(&d, "c"), Some("n3".into()));
}

#[test]
fn events_before_the_snapshot_are_replayed_over_it() {
    // Registry history: carol logs in on n2 and leaves; alice moves from n2 to n3.
    // The snapshot is taken after the first three events reached the registry.
    let history = [
        login("n2", "carol", "carol"),
        logout("n2", "carol"),
        login("n2", "alice", "alice"),
        logout("n2", "alice"),
        login("n3", "alice", "alice"),
    ];
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.subscribed();
    for e in &history[..3] {
        d.apply(e.clone()).unwrap();
    }
    // The copy in use follows the events meanwhile; the snapshot replaces it, and the
    // events are replayed over it.
    assert_eq!(owner(&d, "alice"), Some("n2".into()));
    let mut copy = Logins::new("me".into(), Caps::NONE);
    copy.insert("alice", "n2", "alice").unwrap();
    copy.insert("dave", "me", "dave").unwrap();
    assert_eq!(copy.len(), 1, "this node's own logins are not copied");
    d.snapshot(copy);
    for e in &history[3..] {
        d.apply(e.clone()).unwrap();
    }
    assert_eq!(owner(&d, "alice"), Some("n3".into()));
    assert_eq!(owner(&d, "carol"), None);
    assert_eq!(d.len(), 1);
}

/// What the copy must hold, kept the plain way: by canonical form, the node and the
/// login as sent.
#[derive(Default)]
struct Reference(std::collections::HashMap<String, (String, String)>);

impl Reference {
    fn apply(&mut self, me: &str, event: &DirEvent) {
        match event.clone() {
            DirEvent::Login { node, look, login }
                if node != me && !look.is_empty() && !login.is_empty() =>
            {
                self.0.retain(|_, (_, l)| *l != login);
                self.0.insert(look, (node, login));
            }
            DirEvent::Login { .. } => {}
            DirEvent::Logout { node, look } => {
                if self.0.get(&look).is_some_and(|(n, _)| *n == node) {
                    self.0.remove(&look);
                }
            }
            DirEvent::NodeGone { node } => self.0.retain(|_, (n, _)| *n != node),
        }
    }
}

/// Events over a few nodes and names; a login's canonical form is its lower case,
/// so that some differ from the login and some do not.
fn any_event() -> impl proptest::strategy::Strategy<Value = DirEvent> {
    use proptest::prelude::*;
    let node = prop::sample::select(vec!["me", "n2", "n3", "n4"]).prop_map(String::from);
    let name = prop::sample::select(vec!["a", "A", "bob", "Bob", "carol", "dave", "Eve", "ɑ"]);
    // What only a hostile publisher sends: an empty look or login.
    let odd = prop::sample::select(vec![("", "x"), ("x", ""), ("", "")]);
    prop_oneof![
        6 => (node.clone(), name.clone()).prop_map(|(node, login)| DirEvent::Login {
            node,
            look: login.to_lowercase(),
            login: login.into(),
        }),
        1 => (node.clone(), odd).prop_map(|(node, (look, login))| DirEvent::Login {
            node,
            look: look.into(),
            login: login.into(),
        }),
        3 => (node.clone(), name).prop_map(|(node, login)| DirEvent::Logout {
            node,
            look: login.to_lowercase(),
        }),
        1 => node.prop_map(|node| DirEvent::NodeGone { node }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..Default::default()
    })]

    /// After every event, the copy finds exactly what the reference holds, by login
    /// as sent and by canonical form, whatever was removed (and moved) before.
    #[test]
    fn the_copy_matches_a_plain_reference(
        events in proptest::collection::vec(any_event(), 0..200),
    ) {
        let mut d = Directory::new("me".into(), Caps::NONE);
        let mut model = Reference::default();
        for event in &events {
            d.apply(event.clone()).unwrap();
            model.apply("me", event);
            proptest::prop_assert_eq!(d.len(), model.0.len());
            for (look, (node, login)) in &model.0 {
                let found = d.by_look(look).map(|e| (&*e.node, e.login(), e.look()));
                proptest::prop_assert_eq!(found, Some((node.as_str(), login.as_str(), look.as_str())));
                let exact = d.exact(login).map(|e| e.look());
                proptest::prop_assert_eq!(exact, Some(look.as_str()));
            }
            for name in ["a", "A", "bob", "Bob", "carol", "dave", "Eve", "eve", "ɑ", "x", ""] {
                let held = model.0.values().any(|(_, l)| l == name);
                proptest::prop_assert_eq!(d.exact(name).is_some(), held, "{}", name);
                let look = name.to_lowercase();
                proptest::prop_assert_eq!(d.by_look(&look).is_some(), model.0.contains_key(&look));
            }
        }
    }
}

/// Forged login events cannot grow the copy past its caps: per node, and in all. A login
/// that replaces one of the same node's is not refused at the cap.
#[test]
fn the_copy_stays_within_its_caps() {
    let caps = Caps {
        per_node: 3,
        total: 5,
    };
    let mut d = Directory::new("me".into(), caps);
    for i in 0..3 {
        d.apply(login("n2", &format!("a{i}"), &format!("a{i}")))
            .unwrap();
    }
    assert_eq!(
        d.apply(login("n2", "a3", "a3")),
        Err(Refusal::NodeFull),
        "a fourth login of n2"
    );
    d.apply(login("n2", "a0", "A0")).unwrap();
    assert_eq!(owner(&d, "A0"), Some("n2".into()));
    d.apply(login("n3", "b0", "b0")).unwrap();
    d.apply(login("n4", "c0", "c0")).unwrap();
    assert_eq!(
        d.apply(login("n5", "d0", "d0")),
        Err(Refusal::DirectoryFull)
    );
    assert_eq!(d.len(), 5);
    // Room again once a login leaves.
    d.apply(logout("n4", "c0")).unwrap();
    d.apply(login("n5", "d0", "d0")).unwrap();
    assert_eq!(owner(&d, "d0"), Some("n5".into()));
    let mut copy = Logins::new("me".into(), caps);
    for i in 0..10 {
        let _ = copy.insert(&format!("x{i}"), &format!("n{i}"), &format!("x{i}"));
    }
    assert_eq!(copy.len(), 5);
}

/// Events kept for a snapshot are bounded: past the bound they are dropped (once
/// reported, for the copy to be read again), and the copy in use still follows them.
#[test]
fn events_waiting_for_a_snapshot_are_bounded() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.subscribed();
    let mut lost = 0;
    for i in 0..PENDING_MAX + 10 {
        if d.apply(login("n2", &format!("u{i}"), &format!("u{i}"))) == Err(Refusal::QueueFull) {
            lost += 1;
        }
    }
    assert_eq!(lost, 1, "reported once");
    assert_eq!(d.pending.as_ref().map(Vec::len), Some(0));
    assert_eq!(d.len(), PENDING_MAX + 10);
    let (old, refused) = d.snapshot(Logins::new("me".into(), Caps::NONE));
    assert_eq!((old.len(), refused.len()), (PENDING_MAX + 10, 0));
    assert!(d.is_empty());
}

#[test]
fn a_sender_is_held_by_the_node_that_sent_it() {
    let mut d = Directory::new("me".into(), Caps::NONE);
    d.apply(login("n2", "alice", "Alice")).unwrap();
    assert!(d.holds(Some("n2"), "Alice"));
    assert!(d.holds(None, "Alice"));
    assert!(!d.holds(Some("n3"), "Alice"));
    assert!(!d.holds(Some("n2"), "alice"), "as written");
    assert!(!d.holds(Some("n2"), "admin"));
    assert!(!d.holds(None, "admin"));
}
