//! Renewal deadlines: one per session with a live channel, all in one `DelayQueue` owned by
//! one task, so 10⁵ sessions cost 10⁵ timer entries and no sleeping tasks.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{delay_queue, DelayQueue};

use crate::clock::{now_ms, Millis};

/// Handle to the scheduler task.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<(String, Millis)>,
}

/// A session whose renewal is due, with the deadline it was due at.
pub type Due = (String, Millis);

impl Scheduler {
    /// Starts the task; each session id is sent on `due`, with its deadline, when that passes.
    /// Unbounded command queue: commands are tiny and the task only moves timers, so it keeps up.
    /// The task is one of `tasks` and ends when `stop` is cancelled.
    pub fn spawn(
        due: mpsc::UnboundedSender<Due>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Millis)>();
        tasks.spawn(async move {
            let mut queue: DelayQueue<Due> = DelayQueue::new();
            let mut keys: HashMap<String, delay_queue::Key> = HashMap::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    cmd = rx.recv() => {
                        let Some((sid, at)) = cmd else { break };
                        let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                        if let Some(k) = keys.remove(&sid) {
                            queue.remove(&k);
                        }
                        let k = queue.insert((sid.clone(), at), wait);
                        keys.insert(sid, k);
                    }
                    Some(expired) = queue.next(), if !queue.is_empty() => {
                        let (sid, at) = expired.into_inner();
                        keys.remove(&sid);
                        if due.send((sid, at)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Scheduler { tx }
    }

    /// Sets (or moves) the session's deadline to unix time `at_ms`.
    pub fn schedule(&self, sid: &str, at_ms: Millis) {
        let _ = self.tx.send((sid.to_string(), at_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_at_the_latest_deadline() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = Scheduler::spawn(tx, &TaskTracker::new(), CancellationToken::new());
        s.schedule("a", now_ms() + 10_000);
        s.schedule("b", now_ms() + 50);
        s.schedule("a", now_ms() + 100); // moved earlier
        assert_eq!(rx.recv().await.unwrap().0, "b");
        assert_eq!(rx.recv().await.unwrap().0, "a");
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err());
    }
}
