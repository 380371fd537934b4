//! A connection's outgoing queue. A newer `tokens` replaces an unsent older one and nothing
//! follows a closing event, so it never holds more than two events however slow the reader:
//! a stuck reader costs no memory and never blocks the pusher. (A reader stuck on the socket
//! itself is closed by the connection's write timeout.)

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::event::Event;

/// Per-connection queue shared by the hub (producer) and the connection task (consumer).
pub struct Outbox {
    // A std Mutex: held for a push or pop only, never across an await.
    queue: Mutex<VecDeque<Event>>,
    notify: Notify,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        }
    }
}

impl Outbox {
    /// Queues an event and wakes the connection. Never blocks the caller.
    pub fn push(&self, ev: Event) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(q.back(), Some(Event::Revoked(_) | Event::Reconnect { .. })) {
                return; // the connection is already closing
            }
            if matches!(ev, Event::Tokens(_)) {
                q.retain(|e| !matches!(e, Event::Tokens(_)));
            }
            q.push_back(ev);
        }
        // notify_one stores a permit when nobody waits, so a push between the consumer's
        // empty pop and its wait is never lost.
        self.notify.notify_one();
    }

    /// Next queued event, if any.
    pub fn pop(&self) -> Option<Event> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Waits until something was pushed.
    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event::TokensPush;
    use std::sync::Arc;

    fn tokens(gen: u64) -> Event {
        Event::Tokens(Arc::new(TokensPush {
            sid: "s".into(),
            id: format!("s:{gen}"),
            gen,
            deadline_ms: 0,
            access_exp_ms: 0,
            body: String::new(),
            frames: Default::default(),
        }))
    }

    #[test]
    fn newer_tokens_replace_unsent_older_ones() {
        let o = Outbox::default();
        o.push(tokens(1));
        o.push(tokens(2));
        assert!(matches!(o.pop(), Some(Event::Tokens(t)) if t.gen == 2));
        assert!(o.pop().is_none());
    }

    #[test]
    fn queue_stays_bounded_and_ends_with_the_closing_event() {
        let o = Outbox::default();
        for i in 0..100 {
            o.push(tokens(i));
        }
        o.push(Event::Revoked("logout".into()));
        o.push(tokens(101));
        o.push(Event::Reconnect { retry_ms: 5 });
        assert!(matches!(o.pop(), Some(Event::Tokens(t)) if t.gen == 99));
        assert!(matches!(o.pop(), Some(Event::Revoked(r)) if &*r == "logout"));
        assert!(o.pop().is_none(), "nothing after a closing event");
    }
}
