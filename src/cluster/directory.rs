//! The router's copy of who is logged in on the other nodes, kept from the registry's
//! snapshot and the directory events that follow it; pure, no I/O.
//!
//! A snapshot is taken after the link subscribes to the events, so every change after
//! it reaches this copy as an event too. Events that arrive between the subscription and
//! the snapshot are kept and replayed over the snapshot: each event is absolute (this
//! node holds that login; this node no longer holds it), so replaying one the snapshot
//! already holds changes nothing, and the copy ends where the registry is.

use std::collections::HashMap;
use std::sync::Arc;

use super::frame::DirEvent;

/// Where a login on another node lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Arc<str>,
    /// The login as its owner logged in, which is how the other node knows it.
    pub login: Arc<str>,
}

/// Logins held by other nodes.
#[derive(Debug)]
pub struct Directory {
    /// This node: its own events come back on the channel and are skipped.
    me: Arc<str>,
    /// By canonical form (`names::canonical`), the registry's key.
    by_look: HashMap<Box<str>, Entry>,
    /// Canonical forms by the login as sent, for the lookup every delivery makes first.
    by_login: HashMap<Arc<str>, Box<str>>,
    /// Events since the link subscribed, kept until the snapshot they must follow.
    pending: Option<Vec<DirEvent>>,
}

impl Directory {
    pub fn new(me: Arc<str>) -> Directory {
        Directory {
            me,
            by_look: HashMap::new(),
            by_login: HashMap::new(),
            pending: None,
        }
    }

    /// How many logins other nodes hold.
    pub fn len(&self) -> usize {
        self.by_look.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_look.is_empty()
    }

    /// The link subscribed: keep events until the snapshot.
    pub fn subscribed(&mut self) {
        self.pending = Some(Vec::new());
    }

    /// The registry's whole directory, as `(look, node, login)`; then the events kept
    /// since the subscription.
    pub fn snapshot(&mut self, entries: Vec<(String, String, String)>) {
        self.by_look.clear();
        self.by_login.clear();
        for (look, node, login) in entries {
            self.insert(look, node, login);
        }
        for event in self.pending.take().unwrap_or_default() {
            self.apply_now(event);
        }
    }

    /// One event from the directory channel.
    pub fn apply(&mut self, event: DirEvent) {
        match &mut self.pending {
            Some(kept) => kept.push(event),
            None => self.apply_now(event),
        }
    }

    fn apply_now(&mut self, event: DirEvent) {
        match event {
            DirEvent::Login { node, look, login } => self.insert(look, node, login),
            DirEvent::Logout { node, look } => {
                if self.by_look.get(&*look).is_some_and(|e| *e.node == *node) {
                    self.remove(&look);
                }
            }
            DirEvent::NodeGone { node } => {
                let gone: Vec<Box<str>> = self
                    .by_look
                    .iter()
                    .filter(|(_, e)| *e.node == *node)
                    .map(|(look, _)| look.clone())
                    .collect();
                for look in gone {
                    self.remove(&look);
                }
            }
        }
    }

    fn insert(&mut self, look: String, node: String, login: String) {
        if *node == *self.me {
            return;
        }
        self.remove(&look);
        let login: Arc<str> = login.into();
        let look: Box<str> = look.into();
        self.by_login.insert(login.clone(), look.clone());
        self.by_look.insert(
            look,
            Entry {
                node: node.into(),
                login,
            },
        );
    }

    fn remove(&mut self, look: &str) {
        if let Some(entry) = self.by_look.remove(look) {
            self.by_login.remove(&entry.login);
        }
    }

    /// The other node's login `name` is, exactly as written.
    pub fn exact(&self, name: &str) -> Option<&Entry> {
        self.by_look.get(self.by_login.get(name)?)
    }

    /// The other node's login whose canonical form is `look`.
    pub fn by_look(&self, look: &str) -> Option<&Entry> {
        self.by_look.get(look)
    }
}

#[cfg(test)]
mod tests {
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
        let mut d = Directory::new("me".into());
        d.apply(login("n2", "alice", "Alice"));
        d.apply(login("me", "bob", "bob"));
        assert_eq!(owner(&d, "Alice"), Some("n2".into()));
        assert_eq!(d.by_look("alice").map(|e| &*e.login), Some("Alice"));
        assert_eq!(owner(&d, "bob"), None);
        // A logout by a node that does not hold the login changes nothing.
        d.apply(logout("n3", "alice"));
        assert_eq!(owner(&d, "Alice"), Some("n2".into()));
        d.apply(logout("n2", "alice"));
        assert_eq!(owner(&d, "Alice"), None);
        assert!(d.is_empty());
    }

    #[test]
    fn a_gone_node_takes_all_its_logins() {
        let mut d = Directory::new("me".into());
        d.apply(login("n2", "a", "a"));
        d.apply(login("n2", "b", "b"));
        d.apply(login("n3", "c", "c"));
        d.apply(DirEvent::NodeGone { node: "n2".into() });
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
        let mut d = Directory::new("me".into());
        d.subscribed();
        for e in &history[..3] {
            d.apply(e.clone());
        }
        assert!(d.is_empty(), "nothing applies before the snapshot");
        d.snapshot(vec![("alice".into(), "n2".into(), "alice".into())]);
        for e in &history[3..] {
            d.apply(e.clone());
        }
        assert_eq!(owner(&d, "alice"), Some("n3".into()));
        assert_eq!(owner(&d, "carol"), None);
        assert_eq!(d.len(), 1);
    }
}
