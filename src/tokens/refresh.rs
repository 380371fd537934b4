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
        let gen = gen.parse().ok()?;
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
}
