//! The batch a reader builds from one turn's lines, before it hands it to the router:
//! every delivery line back to back in one buffer, every recipient list once, and
//! consecutive messages to the same recipients joined into one item. No I/O here.

use std::cell::RefCell;
use std::sync::Arc;

use crate::protocol::{self, Message};
use crate::server::event::{Batch, Event, Item};

/// Largest line buffer a thread keeps for its next batch.
const KEEP_LINES_BYTES: usize = 256 * 1024;

thread_local! {
    /// Where a batch's delivery lines are written before they are copied, at their exact
    /// size, into the buffer its recipients share: one buffer per thread that has grown
    /// once, not one grown again (and copied at each doubling) for every batch.
    static LINES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A batch being built.
#[derive(Default)]
pub struct Building {
    /// Every delivery line so far, `from <sender>: <text>\n`, back to back (the
    /// thread's buffer, given back by [`Building::into_event`]).
    lines: Vec<u8>,
    /// Every recipient of every message item, each followed by `\n`.
    names: String,
    items: Vec<Item>,
    /// The recipients, as written, of the last item when it is a message: a message that
    /// names them the same way joins that item, so that a run of lines to one person is
    /// routed, queued and written once instead of line by line.
    run: String,
    /// Distinct recipients of the last message item.
    run_recipients: usize,
    /// Messages taken (lines, not items).
    pub messages: usize,
    /// Deliveries asked for: each message times its distinct recipients.
    pub deliveries: usize,
}

impl Building {
    /// A batch with nothing in it yet.
    pub fn new() -> Building {
        Building {
            lines: LINES.with_borrow_mut(std::mem::take),
            ..Building::default()
        }
    }

    /// Parses `line` from `sender` and adds it, or says why it is no message. A line
    /// that names its recipients exactly as the message before it joins that message's
    /// item ([`protocol::parse_after`]) without its recipients being split again.
    pub fn add(
        &mut self,
        sender: &str,
        line: &str,
        max_recipients: usize,
    ) -> Result<(), protocol::MessageError> {
        if let Some(sibling) = self
            .run()
            .and_then(|dest| protocol::parse_after(line, dest))
        {
            let text = sibling?.text;
            self.messages += 1;
            protocol::write_delivery(&mut self.lines, sender, text);
            if let Some(Item::Message { line, messages, .. }) = self.items.last_mut() {
                line.end = self.lines.len();
                *messages += 1;
            }
            self.deliveries += self.run_recipients;
            return Ok(());
        }
        let msg = protocol::parse_message(line, max_recipients)?;
        self.message(sender, &msg);
        Ok(())
    }

    /// Adds a message from `sender` as an item of its own.
    fn message(&mut self, sender: &str, msg: &Message<'_>) {
        self.messages += 1;
        let start = self.lines.len();
        protocol::write_delivery(&mut self.lines, sender, msg.text);
        let names_start = self.names.len();
        let mut recipients = 0;
        for name in msg.recipients() {
            self.names.push_str(name);
            self.names.push('\n');
            recipients += 1;
        }
        self.deliveries += recipients;
        self.items.push(Item::Message {
            line: start..self.lines.len(),
            names: names_start..self.names.len(),
            messages: 1,
        });
        self.run.clear();
        self.run.push_str(msg.dest());
        self.run_recipients = recipients;
    }

    /// The recipients, as written, of the last item when it is a message: a line that
    /// names them the same way joins it ([`protocol::parse_after`]).
    fn run(&self) -> Option<&str> {
        match self.items.last() {
            Some(Item::Message { .. }) => Some(&self.run),
            _ => None,
        }
    }

    /// Adds an answer for the sender, in order with its messages.
    pub fn reply(&mut self, line: Vec<u8>) {
        self.items.push(Item::Reply(line));
    }

    /// The batch for the router, if anything was added.
    pub fn into_event(mut self, from: &Arc<str>) -> Option<Event> {
        let event = (!self.items.is_empty()).then(|| Event::Messages {
            from: from.clone(),
            batch: Batch {
                lines: Arc::from(&self.lines[..]),
                names: std::mem::take(&mut self.names),
                items: std::mem::take(&mut self.items),
            },
        });
        if self.lines.capacity() <= KEEP_LINES_BYTES {
            self.lines.clear();
            LINES.with_borrow_mut(|kept| *kept = std::mem::take(&mut self.lines));
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(lines: &[&str]) -> Batch {
        let mut b = Building::new();
        for line in lines {
            if let Err(e) = b.add("ann", line, 16) {
                b.reply(protocol::format_error(e));
            }
        }
        match b.into_event(&Arc::from("ann")) {
            Some(Event::Messages { batch, .. }) => batch,
            _ => panic!("no batch"),
        }
    }

    /// Each item as (its lines, its names, its count), or the reply.
    fn items(batch: &Batch) -> Vec<(String, String, u32)> {
        batch
            .items
            .iter()
            .map(|item| match item {
                Item::Message {
                    line,
                    names,
                    messages,
                } => (
                    String::from_utf8(batch.lines[line.clone()].to_vec()).unwrap(),
                    batch.names[names.clone()].to_string(),
                    *messages,
                ),
                Item::Reply(line) => (String::from_utf8(line.clone()).unwrap(), "-".into(), 0),
            })
            .collect()
    }

    #[test]
    fn a_run_to_the_same_recipients_is_one_item() {
        let batch = build(&["bob: one", "bob: two", "bob:three"]);
        assert_eq!(
            items(&batch),
            [(
                "from ann: one\nfrom ann: two\nfrom ann: three\n".into(),
                "bob\n".into(),
                3
            )]
        );
    }

    #[test]
    fn other_recipients_or_a_reply_start_a_new_item() {
        let batch = build(&[
            "bob, carl: a",
            "bob, carl: b",
            "bob,carl: c",
            "bob: d",
            "oops",
            "bob: e",
        ]);
        let got = items(&batch);
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[0],
            ("from ann: a\nfrom ann: b\n".into(), "bob\ncarl\n".into(), 2)
        );
        // The same people written another way: a new item, the same names.
        assert_eq!(got[1], ("from ann: c\n".into(), "bob\ncarl\n".into(), 1));
        assert_eq!(got[2], ("from ann: d\n".into(), "bob\n".into(), 1));
        assert_eq!(got[3].1, "-");
        assert_eq!(got[4], ("from ann: e\n".into(), "bob\n".into(), 1));
    }

    #[test]
    fn a_refused_line_in_a_run_is_answered_and_ends_the_run() {
        let batch = build(&["bob: a", "bob: \u{1b}[2J", "bob: b"]);
        let got = items(&batch);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("from ann: a\n".into(), "bob\n".into(), 1));
        assert!(
            got[1].0.starts_with("error: control characters"),
            "{:?}",
            got[1]
        );
        assert_eq!(got[2], ("from ann: b\n".into(), "bob\n".into(), 1));
    }

    #[test]
    fn deliveries_count_every_line_times_its_recipients() {
        let mut b = Building::new();
        for line in ["bob, carl, bob: a", "bob, carl, bob: b", "dan: c"] {
            b.add("ann", line, 16).unwrap();
        }
        assert_eq!((b.messages, b.deliveries), (3, 5));
    }
}
