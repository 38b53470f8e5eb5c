//! The router's copy of who is logged in on the other nodes, kept from the registry's
//! snapshot and the directory events that follow it; pure, no I/O.
//!
//! A snapshot is taken after the link subscribes to the events, so every change after
//! it reaches this copy as an event too. Events that arrive between the subscription and
//! the snapshot are kept and replayed over the snapshot: each event is absolute (this
//! node holds that login; this node no longer holds it), so replaying one the snapshot
//! already holds changes nothing, and the copy ends where the registry is.
//!
//! Every node holds every other node's logins, so the copy is laid out for size: the
//! entries in one dense `Vec`, each with its login and canonical form in one allocation
//! (one string when they are the same) and its node's name shared with every entry of
//! that node; two hash tables of indices into the `Vec` find an entry by login as written
//! and by canonical form.
//!
//! Anyone who can publish to Redis can send events, so the copy is bounded: at most
//! `max_logins_per_node` entries for one node and `max_remote_logins` in all ([`Caps`]);
//! a login beyond either is refused (and counted by the caller). The events kept for a
//! snapshot are bounded too ([`PENDING_MAX`]); past it they are dropped and the copy is
//! read from the registry again.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::checks::Refusal;
use super::frame::DirEvent;

/// Events kept for the snapshot they must follow, at most: past this, the ones that
/// follow are not kept, and the router asks for the copy to be read again.
pub const PENDING_MAX: usize = 1 << 16;

/// How many logins the copy holds at most (`[cluster] max_logins_per_node` and
/// `max_remote_logins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Entries of one node, at most.
    pub per_node: usize,
    /// Entries in all, at most.
    pub total: usize,
}

impl Caps {
    /// No bound: for tests of the copy's other rules.
    pub const NONE: Caps = Caps {
        per_node: usize::MAX,
        total: usize::MAX,
    };
}

/// A login on another node, cheap to clone (two reference counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The node that holds the login; one allocation shared by all of its entries.
    pub node: Arc<str>,
    /// The login as its owner logged in (which is how the other node knows it), followed
    /// by its canonical form unless the two are the same.
    names: Arc<str>,
    /// Where the login ends in `names`; the canonical form is the rest, or the login
    /// itself when `names` ends there.
    split: u32,
    /// The hashes the two tables file this entry under, kept so that removing an entry
    /// or filing the tables again never hashes a name again.
    look_hash: u32,
    login_hash: u32,
}

impl Entry {
    /// The login as its owner logged in.
    pub fn login(&self) -> &str {
        &self.names[..self.split as usize]
    }

    /// Its canonical form (`names::canonical`), the registry's key.
    pub fn look(&self) -> &str {
        match &self.names[self.split as usize..] {
            "" => self.login(),
            look => look,
        }
    }
}

/// A table's element: an index into the entries, and the hash it is filed under (so that
/// growing the table reads nothing but the table).
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: u32,
    hash: u32,
}

/// A table's hash from a kept 32-bit one: its low bits pick the bucket, its high bits
/// the tag hashbrown keeps in the top 7 bits of a 64-bit hash.
fn widen(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// Logins held by other nodes: the copy itself. The link builds one from the registry's
/// pages, off the router's path, and hands it over whole ([`Directory::snapshot`]).
#[derive(Debug)]
pub struct Logins {
    /// This node: its own logins are not part of the copy.
    me: Arc<str>,
    /// Every entry, dense: a removal moves the last one into the gap.
    entries: Vec<Entry>,
    /// Indices into `entries` by canonical form, the registry's key.
    by_look: HashTable<Slot>,
    /// Indices into `entries` by the login as sent, for the lookup every delivery makes
    /// first.
    by_login: HashTable<Slot>,
    /// Hashes names (keyed per process, as a `HashMap`'s are).
    hasher: RandomState,
    /// The nodes that hold entries, each name shared by its entries, and how many each
    /// holds: a node goes when its last entry does.
    nodes: HashMap<Arc<str>, usize>,
    /// How many entries the copy takes, per node and in all.
    caps: Caps,
}

impl Logins {
    pub fn new(me: Arc<str>, caps: Caps) -> Logins {
        Logins {
            me,
            entries: Vec::new(),
            by_look: HashTable::new(),
            by_login: HashTable::new(),
            hasher: RandomState::new(),
            nodes: HashMap::new(),
            caps,
        }
    }

    /// A new, empty copy with the same node and bounds.
    pub fn empty_like(&self) -> Logins {
        Logins::new(self.me.clone(), self.caps)
    }

    /// Room for `more` entries, so that a copy built to a known size grows once.
    pub fn reserve(&mut self, more: usize) {
        self.entries.reserve_exact(more);
        self.by_look.reserve(more, |s| widen(s.hash));
        self.by_login.reserve(more, |s| widen(s.hash));
    }

    /// How many logins other nodes hold.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn hash(&self, name: &str) -> u32 {
        self.hasher.hash_one(name) as u32
    }

    /// `node` holds `login`, whose canonical form is `look` (this node's own are skipped,
    /// and so are empty names, which no node registers: an entry must be found again by
    /// the keys it was filed under). Refused past the [`Caps`]; the names are checked by
    /// the caller (`checks::check_entry`).
    pub fn insert(&mut self, look: &str, node: &str, login: &str) -> Result<(), Refusal> {
        if *node == *self.me || look.is_empty() || login.is_empty() {
            return Ok(());
        }
        if let Some(at) = self.find_look(look) {
            self.remove(at);
        }
        // One login as written has one canonical form, so this finds nothing unless a
        // node computed another (another Unicode version): the newer entry wins, and each
        // table keeps one index per key.
        if let Some(at) = self.find_login(login) {
            self.remove(at);
        }
        if self.nodes.get(node).copied().unwrap_or(0) >= self.caps.per_node {
            return Err(Refusal::NodeFull);
        }
        if self.entries.len() >= self.caps.total {
            return Err(Refusal::DirectoryFull);
        }
        let node = match self.nodes.get_key_value(node) {
            Some((shared, _)) => shared.clone(),
            None => node.into(),
        };
        *self.nodes.entry(node.clone()).or_default() += 1;
        let names: Arc<str> = match look == login {
            true => login.into(),
            false => [login, look].concat().into(),
        };
        let entry = Entry {
            node,
            names,
            split: login.len() as u32,
            look_hash: self.hash(look),
            login_hash: self.hash(login),
        };
        let at = self.entries.len() as u32;
        Self::file(&mut self.by_look, at, entry.look_hash);
        Self::file(&mut self.by_login, at, entry.login_hash);
        self.entries.push(entry);
        Ok(())
    }

    /// `node` no longer holds the login whose canonical form is `look`.
    fn logout(&mut self, node: &str, look: &str) {
        if let Some(at) = self.find_look(look) {
            if *self.entries[at].node == *node {
                self.remove(at);
            }
        }
    }

    /// `node` is gone, and every login it held. A node that holds nothing here (one that
    /// left, or a name nobody registered) costs one lookup; one that holds a large share
    /// of the copy is cut out in one pass, and the tables filed again from the kept
    /// hashes, instead of one removal at a time.
    fn node_gone(&mut self, node: &str) {
        let Some((gone, &held)) = self.nodes.get_key_value(node) else {
            return;
        };
        let gone = gone.clone();
        if held >= self.entries.len() / 8 {
            self.entries.retain(|e| !Arc::ptr_eq(&e.node, &gone));
            self.nodes.remove(node);
            self.refile();
            return;
        }
        // From the end (the newest entries), so that the entry moved into a gap was
        // already looked at; done when the last of its entries is.
        let mut left = held;
        let mut at = self.entries.len();
        while left > 0 && at > 0 {
            at -= 1;
            if Arc::ptr_eq(&self.entries[at].node, &gone) {
                self.remove(at);
                left -= 1;
            }
        }
    }

    /// Files every entry in both tables again, from the kept hashes.
    fn refile(&mut self) {
        self.by_look.clear();
        self.by_login.clear();
        for (at, entry) in self.entries.iter().enumerate() {
            Self::file(&mut self.by_look, at as u32, entry.look_hash);
            Self::file(&mut self.by_login, at as u32, entry.login_hash);
        }
    }

    fn file(table: &mut HashTable<Slot>, at: u32, hash: u32) {
        table.insert_unique(widen(hash), Slot { at, hash }, |s| widen(s.hash));
    }

    /// Removes the entry at `at`; the last entry takes its place.
    fn remove(&mut self, at: usize) {
        let last = self.entries.len() - 1;
        let gone = &self.entries[at];
        Self::forget(&mut self.by_look, gone.look_hash, at);
        Self::forget(&mut self.by_login, gone.login_hash, at);
        if let Some(held) = self.nodes.get_mut(&*gone.node) {
            *held -= 1;
            if *held == 0 {
                self.nodes.remove(&*gone.node);
            }
        }
        if at != last {
            let moved = &self.entries[last];
            Self::renumber(&mut self.by_look, moved.look_hash, last, at);
            Self::renumber(&mut self.by_login, moved.login_hash, last, at);
        }
        self.entries.swap_remove(at);
    }

    fn forget(table: &mut HashTable<Slot>, hash: u32, at: usize) {
        if let Ok(slot) = table.find_entry(widen(hash), |s| s.at as usize == at) {
            slot.remove();
        }
    }

    fn renumber(table: &mut HashTable<Slot>, hash: u32, from: usize, to: usize) {
        if let Some(slot) = table.find_mut(widen(hash), |s| s.at as usize == from) {
            slot.at = to as u32;
        }
    }

    fn find_look(&self, look: &str) -> Option<usize> {
        self.find(&self.by_look, Entry::look, look)
    }

    fn find_login(&self, login: &str) -> Option<usize> {
        self.find(&self.by_login, Entry::login, login)
    }

    /// The entry `table` files under `name`, where `key` is the name it files an entry by.
    fn find(&self, table: &HashTable<Slot>, key: fn(&Entry) -> &str, name: &str) -> Option<usize> {
        let hash = self.hash(name);
        let slot = table.find(widen(hash), |s| {
            s.hash == hash && key(&self.entries[s.at as usize]) == name
        })?;
        Some(slot.at as usize)
    }
}

/// The router's copy: the logins, and the events that must wait for a snapshot.
#[derive(Debug)]
pub struct Directory {
    logins: Logins,
    /// Events since the link subscribed, kept until the snapshot they must follow (at
    /// most [`PENDING_MAX`]).
    pending: Option<Vec<DirEvent>>,
    /// Events were dropped since the subscription: the snapshot will not be current, and
    /// another has been asked for.
    overflowed: bool,
}

impl Directory {
    pub fn new(me: Arc<str>, caps: Caps) -> Directory {
        Directory {
            logins: Logins::new(me, caps),
            pending: None,
            overflowed: false,
        }
    }

    /// How many logins other nodes hold.
    pub fn len(&self) -> usize {
        self.logins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }

    /// The link subscribed: keep events until the snapshot.
    pub fn subscribed(&mut self) {
        self.pending = Some(Vec::new());
        self.overflowed = false;
    }

    /// The registry's whole directory, read after the subscription; then the events kept
    /// since the subscription. Returns the copy it replaces, for the caller to drop where
    /// freeing it holds nobody up, and how many kept events were refused, by reason.
    pub fn snapshot(&mut self, logins: Logins) -> (Logins, Vec<Refusal>) {
        let old = std::mem::replace(&mut self.logins, logins);
        let refused = self
            .pending
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|event| self.apply_now(event).err())
            .collect();
        self.overflowed = false;
        (old, refused)
    }

    /// One event from the directory channel. While a snapshot is awaited, the event also
    /// changes the copy in use (so that it stays as current as it can), and is kept to be
    /// replayed over the snapshot. `Err(QueueFull)` when it could not be kept: the caller
    /// must ask for the copy to be read again.
    pub fn apply(&mut self, event: DirEvent) -> Result<(), Refusal> {
        let Some(kept) = &mut self.pending else {
            return self.apply_now(event);
        };
        if self.overflowed {
            return self.apply_now(event);
        }
        if kept.len() >= PENDING_MAX {
            *kept = Vec::new();
            self.overflowed = true;
            let _ = self.apply_now(event);
            return Err(Refusal::QueueFull);
        }
        kept.push(event.clone());
        self.apply_now(event)
    }

    fn apply_now(&mut self, event: DirEvent) -> Result<(), Refusal> {
        match event {
            DirEvent::Login { node, look, login } => self.logins.insert(&look, &node, &login),
            DirEvent::Logout { node, look } => {
                self.logins.logout(&node, &look);
                Ok(())
            }
            DirEvent::NodeGone { node } => {
                self.logins.node_gone(&node);
                Ok(())
            }
        }
    }

    /// Whether `node` holds `login` (as written), as far as the copy knows; with `None`
    /// (a frame that does not name its node), whether any other node does.
    pub fn holds(&self, node: Option<&str>, login: &str) -> bool {
        match (self.exact(login), node) {
            (Some(entry), Some(node)) => *entry.node == *node,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The other node's login `name` is, exactly as written.
    pub fn exact(&self, name: &str) -> Option<&Entry> {
        let at = self.logins.find_login(name)?;
        Some(&self.logins.entries[at])
    }

    /// The other node's login whose canonical form is `look`.
    pub fn by_look(&self, look: &str) -> Option<&Entry> {
        let at = self.logins.find_look(look)?;
        Some(&self.logins.entries[at])
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
