//! `GET /connections` off the chat's threads: each answer looks at every open connection (a
//! few milliseconds at 10 000), so it is made on a blocking thread at a lower priority,
//! never on a thread that serves chats, and one at a time: admin clients pipelining it
//! wait for their turn, and cost the machine one core at most, at nice 10.

use std::sync::Arc;

use async_lock::Semaphore;

use super::Control;
use crate::runtime;

/// `GET /connections` answers made at once.
const AT_ONCE: usize = 1;

/// What makes `/connections` answers, and the turns they take.
pub struct Answers {
    /// Makes one answer (on a blocking thread).
    make: Arc<dyn Control>,
    /// One permit per answer made at once.
    turns: Semaphore,
}

impl Answers {
    pub fn new(make: Arc<dyn Control>) -> Answers {
        Answers {
            make,
            turns: Semaphore::new(AT_ONCE),
        }
    }

    /// The `/connections` body for `query`, made on a blocking thread when its turn comes.
    pub async fn answer(&self, query: &str) -> Result<String, super::QueryError> {
        let _turn = self.turns.acquire().await;
        let (make, query) = (self.make.clone(), query.to_owned());
        runtime::spawn_blocking(move || {
            runtime::lower_thread_priority();
            make.connections(&query)
        })
        .await
    }
}
