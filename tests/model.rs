//! A randomized model test of the protocol (issue 14): a seeded generator drives one honest
//! client (several tabs sharing its storage), a thief replaying old tokens, and the clock,
//! against a reference model of DESIGN.md's rotation rule and the REAL [`Sessions`] on the
//! memory and SQLite stores (SQLite reopened on "restart"). Time is a manual clock passed into
//! every step, so grace, idle and absolute lifetimes are crossed without sleeping.
//!
//! After every step: the implementation and the model agree (outcome and session state); the
//! honest client is never refused while nobody else has used the session; every replay
//! outside the rule revokes the session; at most one unconfirmed generation exists (I2).
//!
//! `cargo test --test model` runs a bounded number of steps; `MODEL_STEPS=100000` (see
//! `scripts/bench model`) runs a long one and prints its numbers.

use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tokenpush::clock::{Clock, ManualClock, Millis};
use tokenpush::sessions::memory::MemoryStore;
use tokenpush::sessions::sqlite::SqliteStore;
use tokenpush::sessions::{Outcome, Policy, Session, Sessions, Store, Use};

const SID: &str = "model-session";
const POLICY: Policy = Policy {
    grace_ms: 2_000,
    idle_ms: 20_000,
    max_ms: 200_000,
};

/// DESIGN.md's rotation rule, written again from the text, independently of `rotation.rs`.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    c: u64,
    f: u64,
    confirmed_at: Millis,
    created_at: Millis,
    last_used_at: Millis,
    revoked: bool,
}

impl Model {
    fn new(now: Millis) -> Self {
        Model {
            c: 0,
            f: 0,
            confirmed_at: now,
            created_at: now,
            last_used_at: now,
            revoked: false,
        }
    }

    fn live(&self, now: Millis) -> bool {
        !self.revoked
            && now < self.created_at + POLICY.max_ms
            && now < self.last_used_at + POLICY.idle_ms
    }

    /// Uses are recorded at most every min(60 s, idle / 10).
    fn touch(&mut self, now: Millis) {
        if now - self.last_used_at >= (POLICY.idle_ms / 10).min(60_000) {
            self.last_used_at = now;
        }
    }

    fn present(&mut self, g: u64, how: Use, now: Millis) -> Outcome {
        if !self.live(now) || g > self.c {
            return Outcome::Invalid("");
        }
        let out = if g == self.c {
            // Using the newest generation confirms it; a refresh also rotates.
            if self.c > self.f {
                self.f = self.c;
                self.confirmed_at = now;
            }
            if how == Use::Refresh {
                self.c += 1;
            }
            Outcome::Issue(self.c)
        } else if g == self.f || (g + 1 == self.f && now - self.confirmed_at < POLICY.grace_ms) {
            Outcome::Issue(self.c)
        } else {
            self.revoked = true;
            return Outcome::Reuse;
        };
        self.touch(now);
        out
    }

    fn confirm(&mut self, g: u64, now: Millis) {
        if !self.live(now) {
            return;
        }
        if g == self.c && g > self.f {
            self.f = g;
            self.confirmed_at = now;
        }
        if g == self.c || g == self.f {
            self.touch(now);
        }
    }

    /// A due renewal: rotates only when the last push was confirmed. `None` when not live.
    fn push(&mut self, now: Millis) -> Option<u64> {
        if !self.live(now) {
            return None;
        }
        if self.c == self.f {
            self.c += 1;
        }
        Some(self.c)
    }
}

fn same_kind(a: Outcome, b: Outcome) -> bool {
    match (a, b) {
        (Outcome::Invalid(_), Outcome::Invalid(_)) => true,
        (a, b) => a == b,
    }
}

enum Backend {
    Memory,
    Sqlite(PathBuf),
}

/// One run: a fresh session, `steps` random actions. Returns counts per action kind.
struct Run {
    rng: StdRng,
    clock: Arc<ManualClock>,
    backend: Backend,
    sessions: Sessions,
    model: Model,
    /// The newest generation the honest client was given (all its tabs share storage).
    held: u64,
    /// Tabs with an open channel (they get pushes).
    channels: usize,
    /// Every generation ever issued, for the thief to replay.
    issued: Vec<u64>,
    /// Someone other than the honest client got tokens: from then on the honest client may
    /// rightly be refused (reuse detection works on whoever comes second).
    thief_won: bool,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    steps: u64,
    refresh: u64,
    concurrent: u64,
    ticket: u64,
    push: u64,
    push_lost: u64,
    ack: u64,
    ack_lost: u64,
    resume: u64,
    theft_detected: u64,
    theft_answered: u64,
    clock_jumps: u64,
    restarts: u64,
    expired: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.refresh += o.refresh;
        self.concurrent += o.concurrent;
        self.ticket += o.ticket;
        self.push += o.push;
        self.push_lost += o.push_lost;
        self.ack += o.ack;
        self.ack_lost += o.ack_lost;
        self.resume += o.resume;
        self.theft_detected += o.theft_detected;
        self.theft_answered += o.theft_answered;
        self.clock_jumps += o.clock_jumps;
        self.restarts += o.restarts;
        self.expired += o.expired;
    }
}

fn open(backend: &Backend) -> Arc<dyn Store> {
    match backend {
        Backend::Memory => Arc::new(MemoryStore::default()),
        Backend::Sqlite(path) => Arc::new(SqliteStore::open(path).expect("open sqlite")),
    }
}

impl Run {
    async fn new(seed: u64, backend: Backend) -> Run {
        let clock = Arc::new(ManualClock::new(1_000_000_000));
        let now = clock.now_ms();
        let store = open(&backend);
        let s = Session::new(
            SID.into(),
            "alice".into(),
            "dev".into(),
            "ip".into(),
            "nonce".into(),
            now,
            now + 10_000,
        );
        store.insert(&s).await.unwrap();
        Run {
            rng: StdRng::seed_from_u64(seed),
            clock,
            backend,
            sessions: Sessions::new(store, POLICY),
            model: Model::new(now),
            held: 0,
            channels: 1,
            issued: vec![0],
            thief_won: false,
            stats: Stats::default(),
        }
    }

    async fn present(&mut self, g: u64, how: Use) -> Outcome {
        let now = self.clock.now_ms();
        let got = self
            .sessions
            .update(SID, |s| s.present(g, how, now, &POLICY))
            .await
            .unwrap()
            .unwrap()
            .1;
        let want = self.model.present(g, how, now);
        assert!(
            same_kind(got, want),
            "present({g}, {how:?}): implementation {got:?}, model {want:?}"
        );
        if let Outcome::Issue(n) = got {
            if !self.issued.contains(&n) {
                self.issued.push(n);
            }
        }
        got
    }

    /// The honest client used what it holds: it must be answered unless the session ended
    /// or a thief got in first.
    fn honest(&self, o: Outcome, live_before: bool) {
        if live_before && !self.thief_won {
            assert!(
                matches!(o, Outcome::Issue(_)),
                "honest client holding {} refused: {o:?} (model {:?})",
                self.held,
                self.model
            );
        }
    }

    async fn step(&mut self) {
        self.stats.steps += 1;
        let live_before = self.model.live(self.clock.now_ms());
        match self.rng.random_range(0..100) {
            // Refresh; its response may be lost.
            0..=19 => {
                self.stats.refresh += 1;
                let o = self.present(self.held, Use::Refresh).await;
                self.honest(o, live_before);
                if let (Outcome::Issue(n), false) = (o, self.rng.random_bool(0.2)) {
                    self.held = n;
                }
            }
            // Several tabs refresh the same token at once: all get the same answer.
            20..=27 => {
                self.stats.concurrent += 1;
                let k = self.rng.random_range(2..6);
                let now = self.clock.now_ms();
                let g = self.held;
                let futs = (0..k).map(|_| {
                    let sessions = self.sessions.clone();
                    async move {
                        sessions
                            .update(SID, |s| s.present(g, Use::Refresh, now, &POLICY))
                            .await
                            .unwrap()
                            .unwrap()
                            .1
                    }
                });
                let got = futures::future::join_all(futs).await;
                let mut want = vec![];
                for _ in 0..k {
                    want.push(self.model.present(g, Use::Refresh, now));
                }
                // Execution order is the store's, so compare the answers as a multiset.
                let kinds = |v: &[Outcome]| {
                    let mut k: Vec<String> = v
                        .iter()
                        .map(|o| match o {
                            Outcome::Invalid(_) => "invalid".to_string(),
                            o => format!("{o:?}"),
                        })
                        .collect();
                    k.sort();
                    k
                };
                assert_eq!(
                    kinds(&got),
                    kinds(&want),
                    "concurrent: {got:?} vs model {want:?}"
                );
                if want.iter().any(|o| matches!(o, Outcome::Issue(_))) {
                    assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
                }
                self.honest(want[0], live_before);
                if let Outcome::Issue(n) = want[0] {
                    if !self.issued.contains(&n) {
                        self.issued.push(n);
                    }
                    self.held = n;
                }
            }
            // A ticket: confirms, never rotates.
            28..=37 => {
                self.stats.ticket += 1;
                let o = self.present(self.held, Use::Ticket).await;
                self.honest(o, live_before);
            }
            // A due push, delivered to the open channels or lost.
            38..=55 => {
                let now = self.clock.now_ms();
                let got = self
                    .sessions
                    .update(SID, |s| {
                        s.is_live(now, &POLICY).then(|| s.push(now, now + 10_000))
                    })
                    .await
                    .unwrap()
                    .unwrap()
                    .1;
                let want = self.model.push(now);
                assert_eq!(got, want, "push");
                if let Some(n) = got {
                    if !self.issued.contains(&n) {
                        self.issued.push(n);
                    }
                    if self.channels > 0 && self.rng.random_bool(0.8) {
                        self.stats.push += 1;
                        self.held = n;
                    } else {
                        self.stats.push_lost += 1;
                    }
                }
            }
            // An ack of what the client holds (WS ack, POST /auth/ack), or an ack lost.
            56..=69 => {
                if self.rng.random_bool(0.85) {
                    self.stats.ack += 1;
                    self.confirm(self.held).await;
                } else {
                    self.stats.ack_lost += 1;
                }
            }
            // A tab reopens its channel with Last-Event-ID; behind → a resume push.
            70..=77 => {
                self.stats.resume += 1;
                self.channels = self.rng.random_range(0..4);
                let s = self.confirm(self.held).await;
                if s.is_live(self.clock.now_ms(), &POLICY) && self.held < s.current_gen {
                    self.held = s.current_gen;
                }
            }
            // The thief replays any token ever issued.
            78..=84 => {
                let g = self.issued[self.rng.random_range(0..self.issued.len())];
                let (c, f, at) = (self.model.c, self.model.f, self.model.confirmed_at);
                let in_rule =
                    g == c || g == f || (g + 1 == f && self.clock.now_ms() - at < POLICY.grace_ms);
                let o = self.present(g, Use::Refresh).await;
                if live_before && !in_rule {
                    assert_eq!(
                        o,
                        Outcome::Reuse,
                        "replay of {g} (c {c}, f {f}) not detected"
                    );
                    self.stats.theft_detected += 1;
                }
                if let Outcome::Issue(_) = o {
                    self.thief_won = true;
                    self.stats.theft_answered += 1;
                }
            }
            // Time passes: a little, past grace, past idle, or (rarely) past the absolute
            // lifetime.
            85..=96 => {
                self.stats.clock_jumps += 1;
                let ms = match self.rng.random_range(0..20) {
                    0..=11 => self.rng.random_range(1..1_500),
                    12..=16 => POLICY.grace_ms + self.rng.random_range(0..500),
                    17..=18 => self.rng.random_range(1_000..POLICY.idle_ms + 2_000),
                    _ => POLICY.max_ms,
                };
                self.clock.advance(ms);
            }
            // Restart: SQLite reopened from its file (memory keeps its map).
            _ => {
                if let Backend::Sqlite(_) = self.backend {
                    self.stats.restarts += 1;
                    let policy = self.sessions.policy;
                    self.sessions = Sessions::new(Arc::new(MemoryStore::default()), policy);
                    // The old store (and its writer) is gone once no clone holds it.
                    self.sessions = Sessions::new(open(&self.backend), policy);
                }
            }
        }
        self.check().await;
    }

    async fn confirm(&mut self, g: u64) -> Session {
        let now = self.clock.now_ms();
        let (s, _) = self
            .sessions
            .update(SID, |s| s.confirm(g, now, &POLICY))
            .await
            .unwrap()
            .unwrap();
        self.model.confirm(g, now);
        s
    }

    /// The stored session equals the model's; I2 holds.
    async fn check(&mut self) {
        let s = self.sessions.store.load(SID).await.unwrap().unwrap();
        let got = Model {
            c: s.current_gen,
            f: s.confirmed_gen,
            confirmed_at: s.confirmed_at,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            revoked: s.revoked.is_some(),
        };
        assert_eq!(got, self.model, "store and model disagree");
        assert!(s.current_gen <= s.confirmed_gen + 1, "I2: {s:?}");
        if !self.model.live(self.clock.now_ms()) && !self.model.revoked {
            self.stats.expired += 1;
        }
    }
}

/// Runs `total` steps over many sessions on `backend`s, 60 steps per session on average.
async fn run_steps(total: u64, seed: u64) -> Stats {
    let mut all = Stats::default();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    while all.steps < total {
        n += 1;
        let backend = if n.is_multiple_of(2) {
            Backend::Sqlite(dir.path().join(format!("run{n}.sqlite3")))
        } else {
            Backend::Memory
        };
        let case_seed = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut run = Run::new(case_seed, backend).await;
        let steps = run.rng.random_range(20..100).min(total - all.steps);
        for _ in 0..steps {
            run.step().await;
        }
        all.add(&run.stats);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implementation_agrees_with_the_model() {
    let total: u64 = std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7070);
    let started = std::time::Instant::now();
    let stats = run_steps(total, seed).await;
    // Reached only when every step agreed (any disagreement panics with the step).
    println!(
        "model: {} steps, 0 disagreements, seed {seed}, {:.1} s: {stats:?}",
        stats.steps,
        started.elapsed().as_secs_f64()
    );
    assert!(stats.theft_detected > 0 && stats.restarts > 0 && stats.concurrent > 0);
}
