//! The cluster bus: events every node must see. Single node: delivered in process. Redis:
//! also published on a pub/sub channel; each node delivers what it hears to its own channels.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::event::Reason;
use crate::clock::Millis;

/// Name of the Redis pub/sub channel.
pub const CHANNEL: &str = "tokenpush:events";

/// A cluster-wide event. Small notices only: tokens never ride the bus (a node with channels
/// of the session signs its own copy of the pushed generation from the store's record).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusEvent {
    /// Generation `gen` of session `sid` was pushed, its access token expiring at `exp`.
    Pushed {
        sid: String,
        gen: u64,
        reason: Reason,
        /// When the renewal was due (push lag is measured from here).
        deadline_ms: Millis,
        exp: Millis,
    },
    Revoked {
        sid: String,
        reason: String,
    },
    RolesChanged {
        user: String,
        roles: Vec<String>,
    },
    /// A role change found no channel of these sessions (presence lags): a node that holds
    /// or opens a channel of one pushes it `claims_changed`.
    ClaimsPending {
        sids: Vec<String>,
    },
    /// This node's subscription was (re)established: what was published while it was down
    /// is lost, so catch up from the store now. Never sent on the bus.
    #[serde(skip)]
    Resubscribed,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    event: BusEvent,
}

/// Events waiting for the publisher; past this (Redis down for long) new ones are dropped
/// and other nodes catch up from the store on their next renewal.
const PUBLISH_QUEUE: usize = 65_536;

/// Publishes to other nodes, if any. Local delivery is the caller's job, done first, so
/// a Redis outage never stops pushes and revocations on this node.
#[derive(Clone)]
pub struct Bus {
    tx: Option<mpsc::Sender<BusEvent>>,
}

impl Bus {
    /// A bus with no other nodes.
    pub fn local() -> Self {
        Bus { tx: None }
    }

    /// Joins the Redis bus: returns the bus and a stream of other nodes' events. Its
    /// subscriber and publisher are tasks of `tasks` and end when `stop` is cancelled.
    pub fn redis(
        client: redis::Client,
        conn: redis::aio::ConnectionManager,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<BusEvent>) {
        let node = crate::tokens::random_id(9);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tasks.spawn(stop.clone().run_until_cancelled_owned(subscribe_forever(
            client,
            node.clone(),
            in_tx,
        )));
        let (out_tx, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        tasks.spawn(stop.run_until_cancelled_owned(publish_forever(conn, node, out_rx)));
        (Bus { tx: Some(out_tx) }, in_rx)
    }

    /// Whether other nodes may hear this bus (a channel of a session may be on one of them).
    pub fn is_shared(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `event` for the other nodes without waiting; one task publishes in order.
    pub fn publish(&self, event: BusEvent) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                tracing::warn!("bus publish queue full; event dropped");
            }
        }
    }
}

async fn publish_forever(
    mut conn: redis::aio::ConnectionManager,
    node: String,
    mut rx: mpsc::Receiver<BusEvent>,
) {
    while let Some(event) = rx.recv().await {
        let Ok(text) = serde_json::to_string(&Envelope {
            node: node.clone(),
            event,
        }) else {
            continue;
        };
        if let Err(e) = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(text)
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "bus publish failed");
        }
    }
}

/// Keeps a subscription open, reconnecting with backoff, forwarding other nodes' events.
async fn subscribe_forever(client: redis::Client, me: String, tx: mpsc::UnboundedSender<BusEvent>) {
    use futures::StreamExt;
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if ps.subscribe(CHANNEL).await.is_ok() {
                    backoff = std::time::Duration::from_millis(100);
                    if tx.send(BusEvent::Resubscribed).is_err() {
                        return;
                    }
                    let mut msgs = ps.on_message();
                    while let Some(msg) = msgs.next().await {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Envelope>(&text) {
                            Ok(env) if env.node != me => {
                                if tx.send(env.event).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "undecodable bus message"),
                        }
                    }
                }
                tracing::warn!("bus subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "bus connect failed; retrying"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    }
}
