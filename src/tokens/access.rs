//! Access tokens: RFC 9068 `at+jwt` claims, signing, and pinned verification.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, encode, Header, Validation};
use serde::{Deserialize, Serialize};

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

/// Signs and verifies access tokens with one pinned algorithm and key.
pub struct AccessTokens {
    key: SigningKey,
    validation: Validation,
    header: Header,
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
        }
    }

    /// The public JWK to publish, if the key is asymmetric.
    pub fn jwk(&self) -> Option<&serde_json::Value> {
        self.key.jwk.as_ref()
    }

    /// Signs the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&self.header, claims, &self.key.encoding)
    }

    /// Verifies a token fully (type, kid, algorithm, signature, lifetime, audience, issuer).
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        self.check(token, &self.validation)
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
        }
    }

    fn tokens(seed: u8) -> AccessTokens {
        AccessTokens::new(keys::ed25519(&[seed; 32]).unwrap(), "http://i", "tokenpush")
    }

    #[test]
    fn round_trip_and_rejections() {
        let t = tokens(1);
        let tok = t.sign(&claims(60)).unwrap();
        assert_eq!(t.verify(&tok).unwrap().gen, 3);
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
