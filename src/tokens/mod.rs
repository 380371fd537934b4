//! Minting what clients hold: signed access JWTs, MAC'd refresh tokens, and the
//! TokenResponse that carries both.

pub mod access;
pub mod keys;
pub mod refresh;

use serde::Serialize;

use crate::clock::{now_ms, Millis};
use crate::sessions::Session;
use crate::users::Identity;
pub use access::{AccessTokens, Claims, Rejection};
pub use refresh::RefreshTokens;

/// RFC 6749 §5.1 token response, plus our `session_id`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub session_id: String,
}

/// Everything needed to issue tokens for a session.
pub struct Issuer {
    pub access: AccessTokens,
    pub refresh: RefreshTokens,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_ms: Millis,
    pub idle_ttl_ms: Millis,
    pub max_ttl_ms: Millis,
}

/// An issued pair, with the access token's expiry for scheduling.
pub struct Issued {
    pub response: TokenResponse,
    pub access_exp_ms: Millis,
}

impl Issuer {
    /// Access expiry for a token signed now, in whole seconds as the `exp` claim carries it,
    /// so a client can compute its renewal deadline exactly.
    pub fn access_exp_ms(&self, now: Millis) -> Millis {
        (now + self.access_ttl_ms) / 1000 * 1000
    }

    /// Signs generation `gen` of `session` for `who`, expiring at `exp_ms`.
    pub fn issue(
        &self,
        s: &Session,
        who: &Identity,
        gen: u64,
        exp_ms: Millis,
    ) -> Result<Issued, jsonwebtoken::errors::Error> {
        let now = now_ms();
        let iat = now / 1000;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: who.name.clone(),
            sid: s.sid.clone(),
            gen,
            jti: random_id(16),
            iat,
            // Back-dated so a node whose clock runs slightly behind still accepts it.
            nbf: iat - 5,
            exp: exp_ms / 1000,
            name: who.display_name.clone(),
            roles: who.roles.clone(),
            device: s.device.clone(),
            ip: s.ip.clone(),
            ext: who.ext.clone(),
        };
        let refresh_left = (s.created_at + self.max_ttl_ms).min(now + self.idle_ttl_ms) - now;
        Ok(Issued {
            response: TokenResponse {
                access_token: self.access.sign(&claims)?,
                token_type: "Bearer",
                expires_in: ((claims.exp * 1000 - now).max(0) / 1000) as u64,
                refresh_token: self.refresh.mint(&s.sid, gen, &s.nonce),
                refresh_expires_in: (refresh_left.max(0) / 1000) as u64,
                session_id: s.sid.clone(),
            },
            access_exp_ms: claims.exp * 1000,
        })
    }
}

/// `n` random bytes, base64url: session ids, nonces, tickets, jtis.
pub fn random_id(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}
