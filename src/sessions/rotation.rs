//! The rotation rule of DESIGN.md as pure functions on a [`Session`]: no I/O, no clock.

use super::Session;
use crate::clock::Millis;

/// Lifetimes the rule needs, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub grace_ms: Millis,
    pub idle_ms: Millis,
    pub max_ms: Millis,
}

/// Where a refresh token was presented: `/auth/refresh` rotates, `/auth/ticket` only confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Refresh,
    Ticket,
}

/// What presenting generation `g` leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answer with this generation.
    Issue(u64),
    /// An old token came back: the session is now revoked (`reuse_detected`).
    Reuse,
    /// Not redeemable, and no reason to revoke (revoked, expired, or ahead of the session).
    Invalid(&'static str),
}

/// Reason recorded when replay revokes a session.
pub const REUSE: &str = "reuse_detected";

/// Uses count as activity at most this often, so duplicate answers need no write...
const TOUCH_EVERY_MS: Millis = 60_000;

impl Policy {
    /// ...but at least ten times per idle lifetime, so a session in use never idles out
    /// between two recorded uses, however short `--refresh-idle-ttl` is.
    pub fn touch_every_ms(&self) -> Millis {
        TOUCH_EVERY_MS.min(self.idle_ms / 10).max(1)
    }
}

impl Session {
    /// Whether the session can still be used at `now`.
    pub fn is_live(&self, now: Millis, p: &Policy) -> bool {
        self.revoked.is_none()
            && now < self.created_at + p.max_ms
            && now < self.last_used_at + p.idle_ms
    }

    fn changed(&mut self) {
        self.version += 1;
    }

    /// Applies DESIGN.md's rotation rule to generation `g` (whose MAC is already checked).
    pub fn present(&mut self, g: u64, how: Use, now: Millis, p: &Policy) -> Outcome {
        if self.revoked.is_some() {
            return Outcome::Invalid("the session was revoked");
        }
        if !self.is_live(now, p) {
            return Outcome::Invalid("the session expired");
        }
        let (c, f) = (self.current_gen, self.confirmed_gen);
        let outcome = if g > c {
            // Only the server mints generations, so this is a forgery or a foreign token:
            // refusing it must not let anyone who knows a session id log its user out.
            return Outcome::Invalid("unknown refresh token");
        } else if g == c {
            if c > f {
                self.confirmed_gen = c;
                self.confirmed_at = now;
                self.changed();
            }
            if how == Use::Refresh {
                self.current_gen = c + 1;
                self.rotated_at = now;
                self.changed();
            }
            Outcome::Issue(self.current_gen)
        } else if g == f || (g + 1 == f && now - self.confirmed_at < p.grace_ms) {
            // A lost response or push, a second tab, a retry, or (f − 1 within grace) a
            // concurrent caller that lost the race. Anything older is never redeemable.
            Outcome::Issue(c)
        } else {
            self.revoke(REUSE, now);
            return Outcome::Reuse;
        };
        self.touch(now, p);
        outcome
    }

    /// Records a use as activity (idle timeout), writing at most once per
    /// [`Policy::touch_every_ms`].
    pub fn touch(&mut self, now: Millis, p: &Policy) {
        if now - self.last_used_at >= p.touch_every_ms() {
            self.last_used_at = now;
            self.changed();
        }
    }

    /// The client proved it holds generation `g` (ack, Last-Event-ID, Bearer of that generation).
    /// Returns whether that confirmed something new. Proving the current or the confirmed
    /// generation of a live session is a use: it keeps the session from idling out.
    pub fn confirm(&mut self, g: u64, now: Millis, p: &Policy) -> bool {
        if !self.is_live(now, p) {
            return false;
        }
        let new = g == self.current_gen && g > self.confirmed_gen;
        if new {
            self.confirmed_gen = g;
            self.confirmed_at = now;
            self.changed();
        }
        if g == self.current_gen || g == self.confirmed_gen {
            self.touch(now, p);
        }
        new
    }

    /// A scheduled or requested push: rotate only when the last push was confirmed, so at most
    /// one unconfirmed generation exists. Records the pushed access expiry. Returns the
    /// generation to push.
    pub fn push(&mut self, now: Millis, access_exp_ms: Millis) -> u64 {
        if self.current_gen == self.confirmed_gen {
            self.current_gen += 1;
            self.rotated_at = now;
        }
        self.push_exp_ms = access_exp_ms;
        self.pushed_at = now;
        self.issued_exp_ms = self.issued_exp_ms.max(access_exp_ms);
        self.changed();
        self.current_gen
    }

    /// An access token expiring at `exp` was issued with a refresh answer. Recorded when the
    /// answer wrote anyway (`wrote`), or when it moves the record by a touch interval or more,
    /// so duplicate answers still need no write.
    pub fn issued(&mut self, exp: Millis, wrote: bool, p: &Policy) {
        if exp > self.issued_exp_ms && (wrote || exp - self.issued_exp_ms >= p.touch_every_ms()) {
            self.issued_exp_ms = exp;
            if !wrote {
                self.changed();
            }
        }
    }

    /// Marks the session revoked; returns false when it already was.
    pub fn revoke(&mut self, reason: &str, now: Millis) -> bool {
        if self.revoked.is_some() {
            return false;
        }
        self.revoked = Some(reason.to_string());
        self.revoked_at = now;
        self.changed();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        grace_ms: 30_000,
        idle_ms: 7 * 86_400_000,
        max_ms: 30 * 86_400_000,
    };
    const T0: Millis = 1_000_000_000;

    fn session(c: u64, f: u64, confirmed_ago_ms: Millis) -> Session {
        let mut s = Session::new(
            "sid".into(),
            "alice".into(),
            "dev".into(),
            "127.0.0.1".into(),
            "n".into(),
            T0 - 3_600_000,
            0,
        );
        s.current_gen = c;
        s.confirmed_gen = f;
        s.confirmed_at = T0 - confirmed_ago_ms;
        s.last_used_at = T0 - 1000;
        s
    }

    #[test]
    fn rotation_rule_table() {
        use Outcome::*;
        // (c, f, ms since f confirmed, presented g, use) -> (outcome, c after, f after)
        type Row = (u64, u64, Millis, u64, Use, Outcome, u64, u64);
        let table: &[Row] = &[
            (0, 0, 0, 0, Use::Refresh, Issue(1), 1, 0), // first refresh after login
            (1, 0, 0, 0, Use::Refresh, Issue(1), 1, 0), // concurrent duplicate converges
            (1, 0, 999_999, 0, Use::Refresh, Issue(1), 1, 0), // unconfirmed successor: predecessor still works (I2)
            (1, 0, 0, 1, Use::Refresh, Issue(2), 2, 1),       // successor used: confirm and rotate
            (2, 1, 5_000, 0, Use::Refresh, Issue(2), 2, 1),   // lost the race, inside grace
            (2, 1, 31_000, 0, Use::Refresh, Reuse, 2, 1),     // replay after grace: theft
            (2, 2, 40_000, 0, Use::Refresh, Reuse, 2, 2),
            (2, 2, 5_000, 1, Use::Refresh, Issue(2), 2, 2), // f − 1 inside grace
            (2, 2, 5_000, 0, Use::Refresh, Reuse, 2, 2),    // f − 2: never, even inside grace
            (3, 2, 5_000, 0, Use::Refresh, Reuse, 3, 2),    // f − 2 with a pending successor
            (3, 2, 5_000, 1, Use::Ticket, Issue(3), 3, 2),  // f − 1 on a ticket, inside grace
            (
                2,
                1,
                0,
                3,
                Use::Refresh,
                Invalid("unknown refresh token"),
                2,
                1,
            ), // ahead: no revoke
            (1, 0, 0, 1, Use::Ticket, Issue(1), 1, 1),      // ticket confirms, never rotates
            (1, 1, 0, 1, Use::Ticket, Issue(1), 1, 1),
            (2, 1, 40_000, 0, Use::Ticket, Reuse, 2, 1), // replay detection on tickets too
        ];
        for (i, &(c, f, ago, g, how, want, c2, f2)) in table.iter().enumerate() {
            let mut s = session(c, f, ago);
            let got = s.present(g, how, T0, &P);
            assert_eq!(got, want, "row {i}");
            assert_eq!(
                (s.current_gen, s.confirmed_gen),
                (c2, f2),
                "row {i} generations"
            );
            assert_eq!(s.revoked.is_some(), want == Reuse, "row {i} revoked");
        }
    }

    #[test]
    fn revoked_and_expired_sessions_are_invalid_without_side_effects() {
        let mut s = session(1, 1, 0);
        s.revoke("logout", T0);
        let v = s.version;
        assert!(matches!(
            s.present(1, Use::Refresh, T0, &P),
            Outcome::Invalid(_)
        ));
        assert_eq!(s.version, v);
        let mut s = session(1, 1, 0);
        s.last_used_at = T0 - P.idle_ms - 1;
        assert!(matches!(
            s.present(1, Use::Refresh, T0, &P),
            Outcome::Invalid(_)
        ));
        let mut s = session(1, 1, 0);
        s.created_at = T0 - P.max_ms - 1;
        assert!(matches!(
            s.present(1, Use::Refresh, T0, &P),
            Outcome::Invalid(_)
        ));
    }

    #[test]
    fn push_rotates_only_when_confirmed() {
        let mut s = session(1, 1, 0);
        assert_eq!(s.push(T0, T0 + 6000), 2);
        assert_eq!(
            s.push(T0, T0 + 6000),
            2,
            "previous push unconfirmed: same generation"
        );
        assert!(s.confirm(2, T0, &P));
        assert!(!s.confirm(2, T0, &P), "confirming twice changes nothing");
        assert_eq!(s.push(T0, T0 + 6000), 3);
        assert!(!s.confirm(7, T0, &P), "ahead of the session");
    }

    #[test]
    fn uses_keep_a_short_idle_session_alive() {
        let p = Policy {
            idle_ms: 6_000,
            ..P
        };
        assert_eq!(p.touch_every_ms(), 600);
        assert_eq!(P.touch_every_ms(), 60_000);
        let mut s = session(1, 1, 0);
        s.last_used_at = T0;
        // An ack every 3 s for 30 s: the session never idles out.
        let mut now = T0;
        for _ in 0..10 {
            now += 3_000;
            assert!(s.is_live(now, &p));
            s.confirm(1, now, &p);
        }
        assert!(s.is_live(now + 5_000, &p));
        assert!(!s.is_live(now + 6_000, &p), "nothing for 6 s: expired");
        assert!(!s.confirm(1, now + 6_000, &p), "an ack does not revive it");
        assert_eq!(s.last_used_at, now);
    }

    #[test]
    fn duplicate_answers_do_not_write() {
        let mut s = session(1, 0, 0);
        let v = s.version;
        assert_eq!(s.present(0, Use::Refresh, T0, &P), Outcome::Issue(1));
        assert_eq!(s.version, v);
    }
}
