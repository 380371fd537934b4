//! Tickets and login-failure counters kept in process memory, for the single-node stores:
//! both are short-lived, so losing them on restart costs a client one retry at most.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::TicketGrant;

/// In-process tickets and failure windows.
#[derive(Default)]
pub struct Ephemeral {
    tickets: DashMap<String, (TicketGrant, Instant)>,
    failures: DashMap<String, (u32, Instant)>,
}

impl Ephemeral {
    pub fn put_ticket(&self, ticket: &str, grant: &TicketGrant, ttl: Duration) {
        if self.tickets.len() > 10_000 {
            let now = Instant::now();
            self.tickets.retain(|_, (_, exp)| *exp > now);
        }
        self.tickets
            .insert(ticket.to_string(), (grant.clone(), Instant::now() + ttl));
    }

    /// `DashMap::remove` is atomic, so of two racing callers exactly one gets the grant.
    pub fn take_ticket(&self, ticket: &str) -> Option<TicketGrant> {
        self.tickets
            .remove(ticket)
            .filter(|(_, (_, exp))| *exp > Instant::now())
            .map(|(_, (g, _))| g)
    }

    pub fn add_failure(&self, key: &str, window: Duration) -> (u32, u64) {
        let now = Instant::now();
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, (_, end)| *end > now);
        }
        let mut e = self
            .failures
            .entry(key.to_string())
            .or_insert((0, now + window));
        if e.1 <= now {
            *e = (0, now + window);
        }
        e.0 += 1;
        (e.0, secs_left(e.1, now))
    }

    pub fn failures(&self, key: &str) -> (u32, u64) {
        let now = Instant::now();
        match self.failures.get(key) {
            Some(e) if e.1 > now => (e.0, secs_left(e.1, now)),
            _ => (0, 0),
        }
    }
}

fn secs_left(end: Instant, now: Instant) -> u64 {
    end.saturating_duration_since(now).as_secs_f64().ceil() as u64
}
