//! Access tokens: RFC 9068 `at+jwt` claims, signing, and pinned verification.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, encode, Header, Validation};
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::SigningKey;

/// The claims of every access token (DESIGN.md "Tokens").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub gen: u64,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub name: String,
    pub roles: Vec<String>,
    pub device: String,
    pub ip: String,
    /// App-defined claims (trusted-backend sessions only), namespaced so they never shadow ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<serde_json::Value>,
}

/// Why a presented access token was refused; the text goes into `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    WrongType,
    UnknownKey,
    BadSignature,
    /// Signature good, lifetime over; carries nothing so callers re-decode if they care.
    Expired,
    WrongAudienceOrIssuer,
}

impl Rejection {
    /// Text for `error_description`.
    pub fn describe(self) -> &'static str {
        match self {
            Rejection::Malformed => "the access token is malformed",
            Rejection::WrongType => "not an access token (typ must be at+jwt)",
            Rejection::UnknownKey => "the token's key is unknown",
            Rejection::BadSignature => "the token signature is invalid",
            Rejection::Expired => "the access token expired",
            Rejection::WrongAudienceOrIssuer => "the token is for another audience or issuer",
        }
    }
}

/// Verified tokens remembered at most; past this the cache is cleared of expired entries
/// (or emptied), so memory stays bounded.
const VERIFIED_CACHE: usize = 100_000;

/// Signs and verifies access tokens with one pinned algorithm and key.
pub struct AccessTokens {
    key: SigningKey,
    validation: Validation,
    header: Header,
    /// SHA-256 of a token that passed full verification → its claims. Clients send the same
    /// token many times; a hit skips only the signature check (Ed25519 verify is the most
    /// expensive step of a protected request). Lifetime is re-checked on every hit.
    verified: DashMap<[u8; 32], Arc<Claims>>,
}

impl AccessTokens {
    /// Verification pins the key's algorithm and requires `exp sub aud iss`; `iat` and `sid`
    /// are required by the claims type itself.
    pub fn new(key: SigningKey, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(key.alg);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        // We check our own tokens with our own clock, so no skew to forgive on `exp`;
        // `nbf` is back-dated at signing for other nodes' clocks.
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut header = Header::new(key.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        AccessTokens {
            key,
            validation,
            header,
            verified: DashMap::new(),
        }
    }

    /// The public JWK to publish, if the key is asymmetric.
    pub fn jwk(&self) -> Option<&serde_json::Value> {
        self.key.jwk.as_ref()
    }

    /// Signs the claims. EdDSA signs with the cached key (plain JWS compact serialisation,
    /// about twice as fast as jsonwebtoken's per-call key parsing); HS256 uses jsonwebtoken.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let Some(key) = &self.key.ed25519 else {
            return encode(&self.header, claims, &self.key.encoding);
        };
        use base64::Engine;
        use ed25519_dalek::Signer;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = b64.encode(serde_json::to_vec(&self.header)?);
        out.push('.');
        b64.encode_string(serde_json::to_vec(claims)?, &mut out);
        let sig = key.sign(out.as_bytes());
        out.push('.');
        b64.encode_string(sig.to_bytes(), &mut out);
        Ok(out)
    }

    /// Verifies a token fully (type, kid, algorithm, signature, lifetime, audience, issuer).
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = crate::clock::now_secs();
        if let Some(c) = self.verified.get(&digest) {
            // Same bytes as a token that verified: only time can have changed.
            return if now < c.exp && now >= c.nbf {
                Ok(Claims::clone(&c))
            } else {
                Err(Rejection::Expired)
            };
        }
        let claims = self.check(token, &self.validation)?;
        if self.verified.len() >= VERIFIED_CACHE {
            self.verified.retain(|_, c| c.exp > now);
            if self.verified.len() >= VERIFIED_CACHE {
                self.verified.clear();
            }
        }
        self.verified.insert(digest, Arc::new(claims.clone()));
        Ok(claims)
    }

    /// Verifies everything but the lifetime: for recognising an expired token of a live session.
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, Rejection> {
        let mut v = self.validation.clone();
        v.validate_exp = false;
        v.validate_nbf = false;
        self.check(token, &v)
    }

    fn check(&self, token: &str, validation: &Validation) -> Result<Claims, Rejection> {
        let header = decode_header(token).map_err(|_| Rejection::Malformed)?;
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
        {
            return Err(Rejection::WrongType);
        }
        if header.kid.as_deref() != Some(self.key.kid.as_str()) {
            return Err(Rejection::UnknownKey);
        }
        match decode::<Claims>(token, &self.key.decoding, validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Rejection::Expired,
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => {
                    Rejection::WrongAudienceOrIssuer
                }
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    Rejection::BadSignature
                }
                _ => Rejection::Malformed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::keys;

    fn claims(exp_from_now: i64) -> Claims {
        let now = crate::clock::now_secs();
        Claims {
            iss: "http://i".into(),
            aud: "tokenpush".into(),
            sub: "alice".into(),
            sid: "s".into(),
            gen: 3,
            jti: "j".into(),
            iat: now,
            nbf: now - 2,
            exp: now + exp_from_now,
            name: "Alice".into(),
            roles: vec![],
            device: "d".into(),
            ip: "127.0.0.1".into(),
            ext: None,
        }
    }

    fn tokens(seed: u8) -> AccessTokens {
        AccessTokens::new(keys::ed25519(&[seed; 32]).unwrap(), "http://i", "tokenpush")
    }

    #[test]
    fn cached_key_signatures_verify_with_jsonwebtoken() {
        let t = tokens(9);
        let tok = t.sign(&claims(60)).unwrap();
        let key = keys::ed25519(&[9; 32]).unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&["tokenpush"]);
        let data = jsonwebtoken::decode::<Claims>(&tok, &key.decoding, &v).unwrap();
        assert_eq!(data.claims.sub, "alice");
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.header.kid, Some(key.kid));
    }

    #[test]
    fn round_trip_and_rejections() {
        let t = tokens(1);
        let tok = t.sign(&claims(60)).unwrap();
        assert_eq!(t.verify(&tok).unwrap().gen, 3);
        assert_eq!(t.verify(&tok).unwrap().gen, 3, "cached");
        assert_eq!(tokens(2).verify(&tok).unwrap_err(), Rejection::UnknownKey);
        assert_eq!(
            t.verify(&t.sign(&claims(-5)).unwrap()).unwrap_err(),
            Rejection::Expired
        );
        assert!(t
            .verify_ignoring_expiry(&t.sign(&claims(-5)).unwrap())
            .is_ok());
        let other_aud = AccessTokens::new(keys::ed25519(&[1; 32]).unwrap(), "http://i", "other");
        assert_eq!(
            other_aud.verify(&tok).unwrap_err(),
            Rejection::WrongAudienceOrIssuer
        );
        let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
        let flip = if parts[2].starts_with('A') { "B" } else { "A" };
        parts[2].replace_range(0..1, flip);
        assert_eq!(
            t.verify(&parts.join(".")).unwrap_err(),
            Rejection::BadSignature
        );
        assert_eq!(t.verify("garbage").unwrap_err(), Rejection::Malformed);
    }
}
