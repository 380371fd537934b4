//! A randomized model test of the rotation protocol: random histories of one session's tabs,
//! a thief and the clock, run against the real `Sessions` (load → rule → compare-and-set) on
//! the memory and SQLite stores and against a reference model written from DESIGN.md's
//! "Rotation rule". After every step the two must agree, and the protocol's promises hold.
//!
//! Concurrent steps run in tokio tasks through a store that yields between load and
//! compare-and-set, so the retry loop is exercised; their results must be those of some order
//! of the model (linearizability). Time is a `ManualClock` that `Sessions` carries.
//!
//! `cargo test --test model` runs a bounded number of cases (proptest shrinks a failing history
//! to a minimal one); `scripts/bench model` runs the long mode (`MODEL_STEPS` in all, or
//! `MODEL_CASES` per store, of histories of up to `MODEL_LEN` steps).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokenpush::clock::{Clock, ManualClock, Millis};
use tokenpush::sessions::memory::MemoryStore;
use tokenpush::sessions::sqlite::SqliteStore;
use tokenpush::sessions::{
    Counters, Outcome, Policy, RoleStore, Session, SessionStore, Sessions, Store, StoreResult,
    TicketGrant, TicketStore, Use,
};
use tokenpush::tokens::RefreshTokens;

/// Short lifetimes, so a few clock steps reach every boundary.
const GRACE: Millis = 30_000;
const IDLE: Millis = 120_000;
const MAX: Millis = 600_000;
const POLICY: Policy = Policy {
    grace_ms: GRACE,
    idle_ms: IDLE,
    max_ms: MAX,
};
/// Uses count as activity at most this often (the write-saving granularity, issue 14).
const TOUCH: Millis = if IDLE / 10 < 60_000 {
    IDLE / 10
} else {
    60_000
};
const ACCESS_TTL: Millis = 60_000;
/// Tabs of the one session.
const TABS: usize = 3;
const REUSE: &str = "reuse_detected";

// ---------------------------------------------------------------------------------------------
// The reference model: DESIGN.md's rule, written out again without looking at rotation.rs.

/// What a presentation is answered with, as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 with this generation.
    Issue(u64),
    /// 400 `invalid_grant`, and the session is revoked as `reuse_detected`.
    Reuse,
    /// 400 `invalid_grant`, nothing changes.
    Invalid,
}

impl From<Outcome> for Answer {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Issue(g) => Answer::Issue(g),
            Outcome::Reuse => Answer::Reuse,
            Outcome::Invalid(_) => Answer::Invalid,
        }
    }
}

/// The session record as far as the rule defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    c: u64,
    f: u64,
    confirmed_at: Millis,
    rotated_at: Millis,
    created_at: Millis,
    last_used_at: Millis,
    push_exp_ms: Millis,
    pushed_at: Millis,
    revoked: Option<String>,
    revoked_at: Millis,
}

impl Model {
    /// Login at `now`: generation 0, confirmed (the client holds what login returned).
    fn login(now: Millis) -> Self {
        Model {
            c: 0,
            f: 0,
            confirmed_at: now,
            rotated_at: now,
            created_at: now,
            last_used_at: now,
            push_exp_ms: now + ACCESS_TTL,
            pushed_at: now,
            revoked: None,
            revoked_at: 0,
        }
    }

    /// The implementation's record, reduced to what the model knows.
    fn of(s: &Session) -> Self {
        Model {
            c: s.current_gen,
            f: s.confirmed_gen,
            confirmed_at: s.confirmed_at,
            rotated_at: s.rotated_at,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            push_exp_ms: s.push_exp_ms,
            pushed_at: s.pushed_at,
            revoked: s.revoked.clone(),
            revoked_at: s.revoked_at,
        }
    }

    /// Not revoked, younger than the absolute lifetime, used within the idle lifetime.
    fn live(&self, now: Millis) -> bool {
        self.revoked.is_none() && now < self.created_at + MAX && now < self.last_used_at + IDLE
    }

    /// Whether presenting `g` is answered without revoking (DESIGN.md's three redeemable cases).
    fn redeemable(&self, g: u64, now: Millis) -> bool {
        g == self.c || g == self.f || (g + 1 == self.f && now - self.confirmed_at < GRACE)
    }

    fn touch(&mut self, now: Millis) {
        if now - self.last_used_at >= TOUCH {
            self.last_used_at = now;
        }
    }

    /// `/auth/refresh` (rotates) or `/auth/ticket` (only confirms) with generation `g`.
    fn present(&mut self, g: u64, how: Use, now: Millis) -> Answer {
        if !self.live(now) || g > self.c {
            // Ended sessions, and generations the server never minted, change nothing.
            return Answer::Invalid;
        }
        if !self.redeemable(g, now) {
            self.revoke(REUSE, now);
            return Answer::Reuse;
        }
        if g == self.c {
            if self.c > self.f {
                self.f = self.c;
                self.confirmed_at = now;
            }
            if how == Use::Refresh {
                self.c += 1;
                self.rotated_at = now;
            }
        }
        self.touch(now);
        Answer::Issue(self.c)
    }

    /// A WebSocket ack, `POST /auth/ack`, or `Last-Event-ID` proving generation `g`.
    fn confirm(&mut self, g: u64, now: Millis) -> bool {
        if !self.live(now) {
            return false;
        }
        let new = g == self.c && g > self.f;
        if new {
            self.f = g;
            self.confirmed_at = now;
        }
        if g == self.c || g == self.f {
            self.touch(now);
        }
        new
    }

    /// A push: a new generation only when the last one was confirmed, else `c` again.
    fn push(&mut self, now: Millis) -> Option<u64> {
        if !self.live(now) {
            return None;
        }
        if self.c == self.f {
            self.c += 1;
            self.rotated_at = now;
        }
        self.push_exp_ms = now + ACCESS_TTL;
        self.pushed_at = now;
        Some(self.c)
    }

    fn revoke(&mut self, reason: &str, now: Millis) -> bool {
        if self.revoked.is_some() {
            return false;
        }
        self.revoked = Some(reason.to_string());
        self.revoked_at = now;
        true
    }

    /// Applies one operation of a concurrent batch.
    fn apply(&mut self, op: &Op, g: u64, now: Millis) -> Done {
        match *op {
            Op::Present { how, .. } => Done::Answer(self.present(g, how, now)),
            Op::Ack { .. } => Done::Confirmed(self.confirm(g, now)),
            Op::Push => Done::Pushed(self.push(now)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Histories.

/// One operation of a concurrent batch.
#[derive(Debug, Clone)]
enum Op {
    Present { tab: usize, how: Use },
    Ack { tab: usize },
    Push,
}

/// What an operation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Answer(Answer),
    Confirmed(bool),
    /// The generation pushed, or `None` when the session had ended.
    Pushed(Option<u64>),
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Action {
    /// A tab refreshes with its token (`sync`: after reading the newest from shared storage);
    /// `lost`: the response never arrives.
    Refresh { tab: usize, sync: bool, lost: bool },
    /// Several tasks at once (tabs, retries, the scheduler), each atomic.
    Concurrent(Vec<Op>),
    /// A tab gets a ticket and opens a channel, sending `Last-Event-ID` if `resume`.
    Channel {
        tab: usize,
        sync: bool,
        resume: bool,
    },
    /// The renewal is due: push to every open channel; bit `i` of `lost`: tab `i` misses it.
    Push { lost: u8 },
    /// A tab acks the last pushed generation; `lost`: the ack never arrives.
    Ack { tab: usize, lost: bool },
    /// A tab closes its channel (tab closed, network gone).
    Close { tab: usize },
    /// A thief presents generation `c − back`.
    Replay { back: u64, how: Use },
    /// A token the server never minted: `c + ahead` with a valid MAC, or any with a bad one.
    Forge { ahead: u64, bad_mac: bool },
    /// Time passes.
    Advance(Millis),
    /// The server restarts (SQLite reopened from its file; channels drop).
    Restart,
    /// The background trim of ended sessions runs.
    Trim,
    /// Logout or admin revocation.
    Revoke,
    /// The user logs in again: a new session, every tab holding its generation 0.
    Login,
}

fn how() -> impl Strategy<Value = Use> {
    prop_oneof![3 => Just(Use::Refresh), 1 => Just(Use::Ticket)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..TABS, how()).prop_map(|(tab, how)| Op::Present { tab, how }),
        1 => (0..TABS).prop_map(|tab| Op::Ack { tab }),
        1 => Just(Op::Push),
    ]
}

fn advance() -> impl Strategy<Value = Millis> {
    prop_oneof![
        6 => 0..5_000 as Millis,
        2 => prop::sample::select(vec![GRACE - 1, GRACE, GRACE + 1, TOUCH - 1, TOUCH]),
        1 => prop::sample::select(vec![IDLE - TOUCH, IDLE - 1, IDLE, MAX / 4]),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let tab = 0..TABS;
    let lost = prop::bool::weighted(0.15);
    prop_oneof![
        8 => (tab.clone(), prop::bool::weighted(0.8), lost)
            .prop_map(|(tab, sync, lost)| Action::Refresh { tab, sync, lost }),
        3 => prop::collection::vec(op(), 2..=4).prop_map(Action::Concurrent),
        4 => (tab.clone(), prop::bool::weighted(0.8), any::<bool>())
            .prop_map(|(tab, sync, resume)| Action::Channel { tab, sync, resume }),
        6 => prop::collection::vec(prop::bool::weighted(0.25), TABS).prop_map(|bits| {
            let lost = bits.iter().enumerate().map(|(i, &b)| (b as u8) << i).sum();
            Action::Push { lost }
        }),
        5 => (tab.clone(), lost).prop_map(|(tab, lost)| Action::Ack { tab, lost }),
        1 => tab.prop_map(|tab| Action::Close { tab }),
        2 => (1..=3u64, how()).prop_map(|(back, how)| Action::Replay { back, how }),
        1 => (0..3u64, any::<bool>()).prop_map(|(ahead, bad_mac)| Action::Forge { ahead, bad_mac }),
        8 => advance().prop_map(Action::Advance),
        1 => Just(Action::Restart),
        1 => Just(Action::Trim),
        1 => Just(Action::Revoke),
        4 => Just(Action::Login),
    ]
}

// ---------------------------------------------------------------------------------------------
// The world: the real store and rule, the model, and what each tab holds.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Sqlite,
}

#[derive(Debug, Clone, Default)]
struct Tab {
    /// Generation of the newest refresh token this tab was given.
    held: u64,
    /// Generation of the last `tokens` event its channel received (its `Last-Event-ID`).
    last_event: Option<u64>,
    channel: bool,
}

struct World {
    kind: Kind,
    dir: tempfile::TempDir,
    sessions: Sessions,
    mac: RefreshTokens,
    /// The manual clock every step reads (the one `Sessions` carries too).
    clock: Arc<ManualClock>,
    sid: String,
    nonce: String,
    logins: u64,
    model: Model,
    tabs: [Tab; TABS],
    stats: Arc<Stats>,
}

type Check = Result<(), String>;

/// What the histories exercised, to show the cases reach the rule's corners.
#[derive(Default)]
struct Stats {
    steps: AtomicU64,
    issued: AtomicU64,
    /// `g == f − 1` answered within grace.
    grace: AtomicU64,
    reuse: AtomicU64,
    /// Refused on a live session: forged, or ahead of it.
    unknown: AtomicU64,
    /// Refused because the session had ended (revoked, idle, absolute).
    ended: AtomicU64,
    /// Compare-and-sets that lost to a concurrent one and were retried.
    conflicts: AtomicU64,
    restarts: AtomicU64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} steps; answers: {} issued, {} within grace, {} reuse, {} unknown, {} ended; {} CAS conflicts; {} restarts",
            n(&self.steps),
            n(&self.issued),
            n(&self.grace),
            n(&self.reuse),
            n(&self.unknown),
            n(&self.ended),
            n(&self.conflicts),
            n(&self.restarts)
        )
    }
}

/// A real store with a scheduling point between every load and the compare-and-set that
/// follows it, so concurrent tasks really interleave there and the retry loop of
/// `Sessions::update` is exercised (without it they seldom overlap on two cores).
struct Interleaved {
    inner: Arc<dyn Store>,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl SessionStore for Interleaved {
    async fn insert(&self, s: &Session) -> StoreResult<()> {
        self.inner.insert(s).await
    }
    async fn load(&self, sid: &str) -> StoreResult<Option<Session>> {
        let s = self.inner.load(sid).await;
        tokio::task::yield_now().await;
        s
    }
    async fn cas(&self, s: &Session, expected: u64) -> StoreResult<bool> {
        let ok = self.inner.cas(s, expected).await?;
        if !ok {
            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ok)
    }
    async fn unrevoked(&self, user: Option<&str>) -> StoreResult<Vec<Session>> {
        self.inner.unrevoked(user).await
    }
    async fn revoked_since(&self, since: Millis) -> StoreResult<Vec<String>> {
        self.inner.revoked_since(since).await
    }
    async fn forget_ended(&self, now: Millis, policy: &Policy) -> StoreResult<usize> {
        self.inner.forget_ended(now, policy).await
    }
}

#[async_trait::async_trait]
impl TicketStore for Interleaved {
    async fn put_ticket(&self, t: &str, grant: &TicketGrant, ttl: Duration) -> StoreResult<()> {
        self.inner.put_ticket(t, grant, ttl).await
    }
    async fn take_ticket(&self, ticket: &str) -> StoreResult<Option<TicketGrant>> {
        self.inner.take_ticket(ticket).await
    }
}

#[async_trait::async_trait]
impl Counters for Interleaved {
    async fn hit(&self, key: &str, window: Duration) -> StoreResult<(u32, u64)> {
        self.inner.hit(key, window).await
    }
    async fn give_back(&self, key: &str) -> StoreResult<()> {
        self.inner.give_back(key).await
    }
    async fn count(&self, key: &str) -> StoreResult<u32> {
        self.inner.count(key).await
    }
}

#[async_trait::async_trait]
impl RoleStore for Interleaved {
    async fn roles(&self, user: &str) -> StoreResult<Option<Vec<String>>> {
        self.inner.roles(user).await
    }
    async fn set_roles(&self, user: &str, roles: &[String]) -> StoreResult<()> {
        self.inner.set_roles(user, roles).await
    }
}

/// One node: no presence to share.
impl tokenpush::sessions::Presence for Interleaved {}

fn open_store(kind: Kind, dir: &std::path::Path, stats: &Arc<Stats>) -> Arc<dyn Store> {
    let inner: Arc<dyn Store> = match kind {
        Kind::Memory => Arc::new(MemoryStore::default()),
        Kind::Sqlite => Arc::new(SqliteStore::open(&dir.join("model.sqlite3")).expect("open")),
    };
    Arc::new(Interleaved {
        inner,
        stats: stats.clone(),
    })
}

impl World {
    async fn new(kind: Kind, stats: Arc<Stats>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(kind, dir.path(), &stats);
        let now = 1_700_000_000_000;
        let clock = Arc::new(ManualClock::new(now));
        let mut w = World {
            kind,
            sessions: Sessions::new(store, POLICY).with_clock(clock.clone()),
            dir,
            mac: RefreshTokens::new(b"model test refresh key".to_vec()),
            clock,
            sid: String::new(),
            nonce: String::new(),
            logins: 0,
            model: Model::login(now),
            tabs: Default::default(),
            stats,
        };
        w.login().await;
        w
    }

    /// As `Service::login` does: a new session at generation 0.
    async fn login(&mut self) {
        self.logins += 1;
        self.sid = format!("s{}", self.logins);
        self.nonce = format!("nonce{}", self.logins);
        let s = Session::new(
            self.sid.clone(),
            "alice".into(),
            "dev".into(),
            "127.0.0.1".into(),
            self.nonce.clone(),
            self.now(),
            self.now() + ACCESS_TTL,
        );
        self.sessions.store.insert(&s).await.expect("insert");
        self.model = Model::login(self.now());
        self.tabs = Default::default();
    }

    /// The newest generation any tab holds: what shared storage has, the honest client's token.
    fn newest(&self) -> u64 {
        self.tabs.iter().map(|t| t.held).max().unwrap_or(0)
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn token(&self, gen: u64) -> String {
        self.mac.mint(&self.sid, gen, &self.nonce)
    }

    /// As `Service::redeem` does: MAC check, the rule, and (for a refresh) the access expiry.
    async fn redeem(sessions: &Sessions, token: &str, how: Use) -> Answer {
        let now = sessions.now();
        let mac = RefreshTokens::new(b"model test refresh key".to_vec());
        let Some(p) = RefreshTokens::parse(token) else {
            return Answer::Invalid;
        };
        let policy = sessions.policy;
        let exp = (how == Use::Refresh).then_some(now + ACCESS_TTL);
        let res = sessions
            .update(&p.sid, |s| {
                if !mac.verify(&p, &s.nonce) {
                    return Outcome::Invalid("unknown refresh token");
                }
                let before = s.version;
                let o = s.present(p.gen, how, now, &policy);
                if let (Outcome::Issue(_), Some(exp)) = (o, exp) {
                    s.issued(exp, s.version != before, &policy);
                }
                o
            })
            .await
            .expect("store");
        res.map_or(Answer::Invalid, |(_, o)| o.into())
    }

    /// Presents generation `g` to the implementation and the model; they must answer alike.
    async fn present(&mut self, g: u64, how: Use, what: &str) -> Result<Answer, String> {
        let now = self.now();
        let (live, grace) = (self.model.live(now), g + 1 == self.model.f);
        let got = Self::redeem(&self.sessions, &self.token(g), how).await;
        let want = self.model.present(g, how, now);
        agree(what, got, want)?;
        let counter = match got {
            Answer::Issue(_) if grace => &self.stats.grace,
            Answer::Issue(_) => &self.stats.issued,
            Answer::Reuse => &self.stats.reuse,
            Answer::Invalid if live => &self.stats.unknown,
            Answer::Invalid => &self.stats.ended,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(got)
    }

    /// As `Service::confirm` does.
    async fn confirm(sessions: &Sessions, sid: &str, gen: u64) -> bool {
        let now = sessions.now();
        let policy = sessions.policy;
        sessions
            .update(sid, |s| s.confirm(gen, now, &policy))
            .await
            .expect("store")
            .is_some_and(|(_, new)| new)
    }

    /// As `Service::renew` does once the push is due: nothing for an ended session.
    async fn push(sessions: &Sessions, sid: &str) -> Option<u64> {
        let now = sessions.now();
        let policy = sessions.policy;
        sessions
            .update(sid, |s| {
                s.is_live(now, &policy)
                    .then(|| s.push(now, now + ACCESS_TTL))
            })
            .await
            .expect("store")
            .and_then(|(_, g)| g)
    }

    async fn load(&self) -> Option<Session> {
        self.sessions.store.load(&self.sid).await.expect("load")
    }

    /// The promises that hold after every step, on the real record.
    async fn check(&self, what: &str) -> Check {
        let now = self.now();
        let Some(s) = self.load().await else {
            // A store may drop a session that can never be used again.
            return if self.model.live(now) {
                Err(format!(
                    "{what}: live session {} missing from the store",
                    self.sid
                ))
            } else {
                Ok(())
            };
        };
        let got = Model::of(&s);
        if got != self.model {
            return Err(format!(
                "{what}: the implementation and the model disagree\n  real:  {got:?}\n  model: {:?}",
                self.model
            ));
        }
        if s.current_gen > s.confirmed_gen + 1 {
            return Err(format!(
                "{what}: more than one unconfirmed generation: {got:?}"
            ));
        }
        let newest = self.newest();
        if self.model.live(now) && !(newest == s.confirmed_gen || newest == s.current_gen) {
            return Err(format!(
                "{what}: the honest client holds generation {newest}, not redeemable in {got:?}"
            ));
        }
        Ok(())
    }

    fn end_channels(&mut self) {
        for t in &mut self.tabs {
            t.channel = false;
        }
    }

    /// Runs one step on both sides and checks them against each other.
    async fn step(&mut self, a: &Action) -> Check {
        let now = self.now();
        let what = format!("{a:?} at t+{}", now - 1_700_000_000_000);
        match *a {
            Action::Refresh { tab, sync, lost } => {
                if sync {
                    self.tabs[tab].held = self.newest();
                }
                let g = self.tabs[tab].held;
                let honest = g == self.newest();
                let live = self.model.live(now);
                let got = self.present(g, Use::Refresh, &what).await?;
                if honest && live && !matches!(got, Answer::Issue(_)) {
                    return Err(format!("{what}: the honest client was refused: {got:?}"));
                }
                match got {
                    Answer::Issue(n) if !lost => self.tabs[tab].held = self.tabs[tab].held.max(n),
                    Answer::Reuse => self.end_channels(),
                    _ => {}
                }
            }
            Action::Concurrent(ref ops) => self.concurrent(ops, &what).await?,
            Action::Channel { tab, sync, resume } => self.channel(tab, sync, resume, &what).await?,
            Action::Push { lost } => {
                let got = Self::push(&self.sessions, &self.sid).await;
                let want = self.model.push(now);
                if got != want {
                    return Err(format!("{what}: pushed {got:?}, the model {want:?}"));
                }
                self.delivered(Done::Pushed(got), lost);
            }
            Action::Ack { tab, lost } => {
                if let (Some(g), false) = (self.tabs[tab].last_event, lost) {
                    let got = Self::confirm(&self.sessions, &self.sid, g).await;
                    let want = self.model.confirm(g, now);
                    if got != want {
                        return Err(format!("{what}: confirmed {got}, the model {want}"));
                    }
                }
            }
            Action::Close { tab } => self.tabs[tab].channel = false,
            Action::Replay { back, how } => {
                if let Some(g) = self.model.c.checked_sub(back) {
                    let before = self.load().await.map(|s| Model::of(&s));
                    let got = self.present(g, how, &what).await?;
                    // Checked on the real record, apart from the model: replay outside the
                    // rule is theft, whatever else happened.
                    if let Some(b) = before.filter(|b| b.live(now) && !b.redeemable(g, now)) {
                        let after = self.load().await;
                        let revoked = after.as_ref().and_then(|s| s.revoked.as_deref());
                        if got != Answer::Reuse || revoked != Some(REUSE) {
                            return Err(format!(
                                "{what}: replay of {g} outside the rule in {b:?} was not detected: {got:?}, revoked {revoked:?}"
                            ));
                        }
                    }
                    if got == Answer::Reuse {
                        self.end_channels();
                    }
                }
            }
            Action::Forge { ahead, bad_mac } => {
                let g = self.model.c + ahead;
                let token = if bad_mac {
                    Some(RefreshTokens::new(b"another key".to_vec()).mint(
                        &self.sid,
                        g,
                        &self.nonce,
                    ))
                } else {
                    // `ahead == 0` is the current token: not a forgery.
                    (ahead > 0).then(|| self.token(g))
                };
                if let Some(token) = token {
                    let got = Self::redeem(&self.sessions, &token, Use::Refresh).await;
                    agree(&what, got, Answer::Invalid)?;
                    self.stats.unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
            Action::Advance(ms) => self.clock.advance(ms),
            Action::Restart => {
                if let Kind::Sqlite = self.kind {
                    let before = self.load().await;
                    // Drop the old store first: its writer thread ends once nothing can send.
                    let placeholder = Sessions::new(Arc::new(MemoryStore::default()), POLICY);
                    drop(std::mem::replace(&mut self.sessions, placeholder));
                    let store = open_store(self.kind, self.dir.path(), &self.stats);
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    self.sessions = Sessions::new(store, POLICY).with_clock(self.clock.clone());
                    let after = self.load().await;
                    if before != after {
                        return Err(format!(
                            "{what}: the restart changed the session\n  before: {before:?}\n  after:  {after:?}"
                        ));
                    }
                }
                self.end_channels();
            }
            Action::Trim => {
                self.sessions
                    .store
                    .forget_ended(now, &POLICY)
                    .await
                    .expect("trim");
            }
            Action::Revoke => {
                let real = self
                    .sessions
                    .update(&self.sid, |s| s.revoke("logout", now))
                    .await
                    .expect("store");
                let want = self.model.revoke("logout", now);
                // A store may have dropped an ended session: then there is nothing to revoke.
                if let Some((_, got)) = real.filter(|(_, got)| *got != want) {
                    return Err(format!("{what}: revoked {got}, the model {want}"));
                }
                self.end_channels();
            }
            Action::Login => self.login().await,
        }
        self.check(&what).await
    }

    /// Several operations at once in tokio tasks. Each is atomic, so the results must be those
    /// of the model applying them in some order (linearizability), ending in the real state.
    async fn concurrent(&mut self, ops: &[Op], what: &str) -> Check {
        let now = self.now();
        // What each operation presents: a tab's own token, or the last push it got.
        let gens: Vec<u64> = ops
            .iter()
            .map(|op| match *op {
                Op::Present { tab, .. } => self.tabs[tab].held,
                Op::Ack { tab } => self.tabs[tab].last_event.unwrap_or(self.tabs[tab].held),
                Op::Push => 0,
            })
            .collect();
        let tasks: Vec<_> = ops
            .iter()
            .zip(&gens)
            .map(|(op, &g)| {
                let (op, sessions, sid) = (op.clone(), self.sessions.clone(), self.sid.clone());
                let token = self.token(g);
                tokio::spawn(async move {
                    match op {
                        Op::Present { how, .. } => {
                            Done::Answer(Self::redeem(&sessions, &token, how).await)
                        }
                        Op::Ack { .. } => Done::Confirmed(Self::confirm(&sessions, &sid, g).await),
                        Op::Push => Done::Pushed(Self::push(&sessions, &sid).await),
                    }
                })
            })
            .collect();
        let mut got = Vec::with_capacity(tasks.len());
        for t in tasks {
            got.push(t.await.expect("task"));
        }
        let real = self.load().await.map(|s| Model::of(&s));
        let newest = self.newest();
        let mut found = None;
        for order in permutations(ops.len()) {
            let mut m = self.model.clone();
            let mut want = vec![Done::Confirmed(false); ops.len()];
            let mut honest_refused = false;
            for &i in &order {
                let live = m.live(now);
                want[i] = m.apply(&ops[i], gens[i], now);
                honest_refused |= matches!(ops[i], Op::Present { .. })
                    && live
                    && gens[i] == newest
                    && !matches!(want[i], Done::Answer(Answer::Issue(_)));
            }
            if want == got && real.as_ref().is_none_or(|r| *r == m) {
                if honest_refused {
                    return Err(format!("{what}: the honest client was refused: {got:?}"));
                }
                found = Some(m);
                break;
            }
        }
        let Some(m) = found else {
            return Err(format!(
                "{what}: no order of the operations gives {got:?} and {real:?} (from {:?}, generations {gens:?})",
                self.model
            ));
        };
        self.model = m;
        for (op, done) in ops.iter().zip(&got) {
            match (op, done) {
                (
                    Op::Present {
                        tab,
                        how: Use::Refresh,
                    },
                    Done::Answer(Answer::Issue(n)),
                ) => self.tabs[*tab].held = self.tabs[*tab].held.max(*n),
                (_, Done::Answer(Answer::Reuse)) => self.end_channels(),
                (Op::Push, d) => self.delivered(*d, 0),
                _ => {}
            }
        }
        Ok(())
    }

    /// As `/auth/ticket` then `Service::open_channel` do, `Last-Event-ID` included.
    async fn channel(&mut self, tab: usize, sync: bool, resume: bool, what: &str) -> Check {
        let now = self.now();
        if sync {
            self.tabs[tab].held = self.newest();
        }
        let g = self.tabs[tab].held;
        let honest = g == self.newest();
        let live = self.model.live(now);
        let got = self.present(g, Use::Ticket, what).await?;
        if honest && live && !matches!(got, Answer::Issue(_)) {
            return Err(format!(
                "{what}: the honest client was refused a ticket: {got:?}"
            ));
        }
        match got {
            Answer::Issue(_) => {}
            Answer::Reuse => {
                self.end_channels();
                return Ok(());
            }
            Answer::Invalid => return Ok(()),
        }
        let store = &self.sessions.store;
        let grant = TicketGrant {
            sid: self.sid.clone(),
            gen: g,
        };
        let ticket = format!("ticket-{}-{now}-{tab}", self.sid);
        store
            .put_ticket(&ticket, &grant, Duration::from_secs(30))
            .await
            .expect("put ticket");
        let taken = store.take_ticket(&ticket).await.expect("take ticket");
        if taken.as_ref() != Some(&grant)
            || store.take_ticket(&ticket).await.expect("take").is_some()
        {
            return Err(format!("{what}: the ticket was not single-use: {taken:?}"));
        }
        let mut proved = g;
        let s = match self.tabs[tab].last_event.filter(|_| resume) {
            Some(e) => {
                proved = proved.max(e);
                let policy = self.sessions.policy;
                let real = self
                    .sessions
                    .update(&self.sid, |s| s.confirm(e, now, &policy))
                    .await
                    .expect("store");
                self.model.confirm(e, now);
                real.map(|(s, _)| s)
            }
            None => self.load().await,
        };
        let opened = s.filter(|s| s.is_live(now, &POLICY));
        if opened.is_some() != self.model.live(now) {
            return Err(format!(
                "{what}: channel opened {}, model live {}",
                opened.is_some(),
                self.model.live(now)
            ));
        }
        if let Some(s) = opened {
            let t = &mut self.tabs[tab];
            t.channel = true;
            if proved < s.current_gen {
                // The `resume` push: the current generation, no rotation.
                t.held = t.held.max(s.current_gen);
                t.last_event = Some(s.current_gen);
            }
        }
        Ok(())
    }

    /// A push reaches every open channel whose bit in `lost` is clear.
    fn delivered(&mut self, d: Done, lost: u8) {
        match d {
            Done::Pushed(Some(g)) => {
                for (i, t) in self.tabs.iter_mut().enumerate() {
                    if t.channel && lost & (1 << i) == 0 {
                        t.held = t.held.max(g);
                        t.last_event = Some(g);
                    }
                }
            }
            // The server found the session ended: its channels get `revoked` and close.
            Done::Pushed(None) => self.end_channels(),
            _ => {}
        }
    }
}

fn agree(what: &str, got: Answer, want: Answer) -> Check {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: answered {got:?}, the model {want:?}"))
    }
}

/// Every order of `0..n` (n ≤ 4: at most 24).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = vec![];
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Runner.

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs random histories of 1 to `MODEL_LEN` steps on the store `kind`: `MODEL_CASES` of them,
/// or as many as make about half of `MODEL_STEPS` (the other half runs on the other store).
fn run(kind: Kind, default_cases: u32) {
    let len = env("MODEL_LEN", 48) as usize;
    let cases = match env("MODEL_STEPS", 0) {
        0 => env("MODEL_CASES", default_cases),
        // Histories average (1 + len) / 2 steps.
        steps => (steps / 2).div_ceil((len as u32 / 2).max(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = Arc::new(Stats::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&prop::collection::vec(action(), 1..=len), |history| {
        rt.block_on(async {
            let mut w = World::new(kind, stats.clone()).await;
            w.check("login").await.map_err(TestCaseError::fail)?;
            for a in &history {
                stats.steps.fetch_add(1, Ordering::Relaxed);
                w.step(a).await.map_err(TestCaseError::fail)?;
            }
            Ok(())
        })
    });
    println!(
        "model {kind:?}: {cases} cases, {:.1} s, {} disagreements; {stats}",
        started.elapsed().as_secs_f64(),
        u32::from(result.is_err()),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn model_agrees_with_sessions_on_the_memory_store() {
    run(Kind::Memory, 1000);
}

#[test]
fn model_agrees_with_sessions_on_the_sqlite_store() {
    run(Kind::Sqlite, 300);
}
