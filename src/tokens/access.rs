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

/// The current key (signs) and retired keys (still verify until their tokens expired).
struct KeySet {
    current: SigningKey,
    header: Header,
    retired: Vec<SigningKey>,
}

impl KeySet {
    fn new(current: SigningKey, retired: Vec<SigningKey>) -> Self {
        let mut header = Header::new(current.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(current.kid.clone());
        KeySet {
            current,
            header,
            retired,
        }
    }

    fn by_kid(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.kid == kid)
    }
}

/// Signs and verifies access tokens with one pinned algorithm; the key set can be replaced
/// while serving (signing-key rotation).
pub struct AccessTokens {
    keys: std::sync::RwLock<Arc<KeySet>>,
    validation: Validation,
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
        AccessTokens {
            keys: std::sync::RwLock::new(Arc::new(KeySet::new(key, vec![]))),
            validation,
            verified: DashMap::new(),
        }
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The public JWKs to publish (current first, then retired keys still in use); empty
    /// for a symmetric key.
    pub fn jwks(&self) -> Vec<serde_json::Value> {
        let keys = self.keys();
        std::iter::once(&keys.current)
            .chain(&keys.retired)
            .filter_map(|k| k.jwk.clone())
            .collect()
    }

    /// The `kid` new tokens carry.
    pub fn kid(&self) -> String {
        self.keys().current.kid.clone()
    }

    /// Replaces the key set (same algorithm): `current` signs from now on, `retired` still
    /// verify. Returns whether the current key changed.
    pub fn set_keys(&self, current: SigningKey, retired: Vec<SigningKey>) -> bool {
        let set = Arc::new(KeySet::new(current, retired));
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let changed =
            guard.current.kid != set.current.kid || guard.retired.len() != set.retired.len();
        *guard = set;
        changed
    }

    /// Signs the claims. EdDSA signs with the cached key (plain JWS compact serialisation,
    /// about twice as fast as jsonwebtoken's per-call key parsing); HS256 uses jsonwebtoken.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let keys = self.keys();
        let Some(key) = &keys.current.ed25519 else {
            return encode(&keys.header, claims, &keys.current.encoding);
        };
        use base64::Engine;
        use ed25519_dalek::Signer;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut out = b64.encode(serde_json::to_vec(&keys.header)?);
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
        let keys = self.keys();
        let Some(key) = header.kid.as_deref().and_then(|kid| keys.by_kid(kid)) else {
            return Err(Rejection::UnknownKey);
        };
        match decode::<Claims>(token, &key.decoding, validation) {
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
