//! Refresh tokens `<sid>.<gen>.<mac>`: minted on demand from the session nonce, never stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A refresh token taken apart; the MAC is not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub sid: String,
    pub gen: u64,
    mac: Vec<u8>,
}

/// Mints and checks refresh tokens with the server's refresh MAC key.
pub struct RefreshTokens {
    key: Vec<u8>,
}

impl RefreshTokens {
    /// Uses `key` (from the data dir) for every MAC.
    pub fn new(key: Vec<u8>) -> Self {
        RefreshTokens { key }
    }

    fn mac(&self, sid: &str, gen: u64, nonce: &str) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(sid.as_bytes());
        m.update(b"\0");
        m.update(&gen.to_be_bytes());
        m.update(nonce.as_bytes());
        m
    }

    /// Generation `gen` of session `sid`: the same string on every node, every time.
    pub fn mint(&self, sid: &str, gen: u64, nonce: &str) -> String {
        let tag = self.mac(sid, gen, nonce).finalize().into_bytes();
        format!("{sid}.{gen}.{}", B64.encode(tag))
    }

    /// Splits a token; `None` when it cannot be one of ours.
    pub fn parse(token: &str) -> Option<Presented> {
        let mut it = token.split('.');
        let (sid, gen, mac) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || sid.is_empty() || sid.len() > 64 {
            return None;
        }
        let gen = canonical_u64(gen)?;
        let mac = B64.decode(mac).ok()?;
        Some(Presented {
            sid: sid.to_string(),
            gen,
            mac,
        })
    }

    /// Constant-time check of the MAC against the session's nonce.
    pub fn verify(&self, p: &Presented, nonce: &str) -> bool {
        let want = self.mac(&p.sid, p.gen, nonce).finalize().into_bytes();
        want.as_slice().ct_eq(&p.mac).into()
    }
}

/// A generation exactly as [`RefreshTokens::mint`] writes it: ASCII digits, no sign, no
/// leading zero. `str::parse` also takes `+0` and `007`, which would give one generation
/// several spellings (and several tokens that all look valid).
fn canonical_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    if !digits || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_parse_verify() {
        let r = RefreshTokens::new(vec![7; 32]);
        let t = r.mint("abc", 4, "n1");
        assert_eq!(t, r.mint("abc", 4, "n1"), "deterministic");
        let p = RefreshTokens::parse(&t).unwrap();
        assert_eq!((p.sid.as_str(), p.gen), ("abc", 4));
        assert!(r.verify(&p, "n1"));
        assert!(!r.verify(&p, "n2"));
        let forged = RefreshTokens::parse(&t.replace(".4.", ".5.")).unwrap();
        assert!(!r.verify(&forged, "n1"));
        assert!(RefreshTokens::parse("a.b").is_none());
        assert!(RefreshTokens::parse("a.x.AAAA").is_none());
        assert!(RefreshTokens::parse("a.1.AA.extra").is_none());
    }

    #[test]
    fn generation_must_be_canonical_decimal() {
        let r = RefreshTokens::new(vec![7; 32]);
        let t = r.mint("abc", 0, "n1");
        let mac = t.rsplit('.').next().unwrap();
        assert_eq!(RefreshTokens::parse(&t).unwrap().gen, 0);
        for gen in [
            "+0",
            "00",
            "007",
            "-1",
            " 1",
            "1 ",
            "",
            "0x1",
            "1_0",
            "١",
            "18446744073709551616",
        ] {
            assert!(
                RefreshTokens::parse(&format!("abc.{gen}.{mac}")).is_none(),
                "generation {gen:?} accepted"
            );
        }
        let max = format!("abc.{}.{mac}", u64::MAX);
        assert_eq!(RefreshTokens::parse(&max).unwrap().gen, u64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a client sends, parsing returns `None` or a token that mints back to
        /// the same text: it never panics and never takes two spellings of one token.
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Some(p) = RefreshTokens::parse(&text) {
                let again = format!("{}.{}.{}", p.sid, p.gen, B64.encode(&p.mac));
                proptest::prop_assert_eq!(again, text.to_string());
            }
        }

        /// Structured near-misses: every field mutated, including a well-formed MAC.
        #[test]
        fn near_miss_tokens_never_panic(sid in "[ -~]{0,70}", gen in "[+0-9a -]{0,22}", mac in "[A-Za-z0-9_=+/-]{0,48}") {
            let text = format!("{sid}.{gen}.{mac}");
            if let Some(p) = RefreshTokens::parse(&text) {
                proptest::prop_assert_eq!(p.gen.to_string(), gen);
            }
        }
    }
}
