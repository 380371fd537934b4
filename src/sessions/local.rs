//! Tickets and fixed-window counters kept in process memory, for the single-node stores:
//! both are short-lived, so losing them on restart costs a client one retry at most.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::TicketGrant;

/// In-process tickets and counter windows. Both expire through a time-ordered queue, so an
/// insert costs O(log n) whatever is live (no scan of the map).
#[derive(Default)]
pub struct Ephemeral {
    tickets: DashMap<String, (TicketGrant, Instant)>,
    counters: DashMap<String, (u32, Instant)>,
    /// Expiry times of tickets (taken ones included) and counter windows, soonest first.
    expiries: Mutex<BinaryHeap<Reverse<(Instant, Entry)>>>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Ticket(String),
    Counter(String),
}

impl Ephemeral {
    /// Drops everything whose time has come, then queues `entry` to expire at `at`.
    fn expire_then_queue(&self, now: Instant, entry: Option<(Instant, Entry)>) {
        let Ok(mut q) = self.expiries.lock() else {
            return;
        };
        while q.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse((_, e))) = q.pop() else {
                break;
            };
            match e {
                Entry::Ticket(t) => {
                    self.tickets.remove_if(&t, |_, (_, exp)| *exp <= now);
                }
                Entry::Counter(k) => {
                    self.counters.remove_if(&k, |_, (_, end)| *end <= now);
                }
            }
        }
        if let Some(e) = entry {
            q.push(Reverse(e));
        }
    }

    pub fn put_ticket(&self, ticket: &str, grant: &TicketGrant, ttl: Duration) {
        let now = Instant::now();
        let exp = now + ttl;
        self.tickets
            .insert(ticket.to_string(), (grant.clone(), exp));
        self.expire_then_queue(now, Some((exp, Entry::Ticket(ticket.to_string()))));
    }

    /// `DashMap::remove` is atomic, so of two racing callers exactly one gets the grant.
    pub fn take_ticket(&self, ticket: &str) -> Option<TicketGrant> {
        self.tickets
            .remove(ticket)
            .filter(|(_, (_, exp))| *exp > Instant::now())
            .map(|(_, (g, _))| g)
    }

    /// Counts a hit in `key`'s window (atomic under the entry lock); returns the count, this
    /// hit included, and the window's seconds left.
    pub fn hit(&self, key: &str, window: Duration) -> (u32, u64) {
        let now = Instant::now();
        let (n, end, new) = {
            let mut e = self
                .counters
                .entry(key.to_string())
                .or_insert((0, now + window));
            let new = e.1 <= now || e.0 == 0;
            if e.1 <= now {
                *e = (0, now + window);
            }
            e.0 += 1;
            (e.0, e.1, new)
        };
        self.expire_then_queue(now, new.then(|| (end, Entry::Counter(key.to_string()))));
        (n, secs_left(end, now))
    }

    /// Takes one hit back, if the window still exists.
    pub fn give_back(&self, key: &str) {
        if let Some(mut e) = self.counters.get_mut(key) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// Hits in `key`'s live window, without counting one.
    pub fn count(&self, key: &str) -> u32 {
        self.counters
            .get(key)
            .filter(|e| e.1 > Instant::now())
            .map_or(0, |e| e.0)
    }

    /// Live tickets and counter windows (for tests).
    pub fn len(&self) -> usize {
        self.tickets.len() + self.counters.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secs_left(end: Instant, now: Instant) -> u64 {
    end.saturating_duration_since(now).as_secs_f64().ceil() as u64
}

/// Implements [`super::TicketStore`] and [`super::Counters`] for a single-node store through
/// its `ephemeral` field.
macro_rules! local_tickets_and_counters {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl $crate::sessions::TicketStore for $t {
            async fn put_ticket(
                &self,
                ticket: &str,
                grant: &$crate::sessions::TicketGrant,
                ttl: std::time::Duration,
            ) -> $crate::sessions::StoreResult<()> {
                self.ephemeral.put_ticket(ticket, grant, ttl);
                Ok(())
            }
            async fn take_ticket(
                &self,
                ticket: &str,
            ) -> $crate::sessions::StoreResult<Option<$crate::sessions::TicketGrant>> {
                Ok(self.ephemeral.take_ticket(ticket))
            }
        }
        #[async_trait::async_trait]
        impl $crate::sessions::Counters for $t {
            async fn hit(
                &self,
                key: &str,
                window: std::time::Duration,
            ) -> $crate::sessions::StoreResult<(u32, u64)> {
                Ok(self.ephemeral.hit(key, window))
            }
            async fn give_back(&self, key: &str) -> $crate::sessions::StoreResult<()> {
                self.ephemeral.give_back(key);
                Ok(())
            }
            async fn count(&self, key: &str) -> $crate::sessions::StoreResult<u32> {
                Ok(self.ephemeral.count(key))
            }
        }
    };
}
pub(crate) use local_tickets_and_counters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tickets_and_windows_leave_without_a_scan() {
        let e = Ephemeral::default();
        let g = TicketGrant {
            sid: "s".into(),
            gen: 0,
        };
        for i in 0..1000 {
            e.put_ticket(&format!("t{i}"), &g, Duration::from_millis(1));
        }
        e.hit("k", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        e.put_ticket("fresh", &g, Duration::from_secs(30));
        assert_eq!(e.len(), 1, "only the fresh ticket is left");
        assert_eq!(e.expiries.lock().unwrap().len(), 1);
        assert_eq!(e.take_ticket("fresh"), Some(g));
    }

    #[test]
    fn hits_count_and_give_back() {
        let e = Ephemeral::default();
        let w = Duration::from_secs(60);
        assert_eq!(e.hit("k", w).0, 1);
        assert_eq!(e.hit("k", w).0, 2);
        e.give_back("k");
        assert_eq!(e.hit("k", w).0, 2);
        assert!(e.hit("k", w).1 <= 60);
        assert_eq!(e.count("k"), 3, "count does not hit");
        assert_eq!(e.count("other"), 0);
        e.hit("short", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(e.count("short"), 0, "an ended window counts nothing");
    }
}
