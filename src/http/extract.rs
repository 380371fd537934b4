//! Request extractors: JSON-or-form bodies with DESIGN.md errors, Bearer access tokens
//! (`Authed`, `Admin`), and the client address.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;
use crate::tokens::Claims;

/// A body parsed from `application/json` or `application/x-www-form-urlencoded`.
pub struct Body<T> {
    pub value: T,
    /// True when it came as a form (RFC 6749 clients).
    pub form: bool,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = ctype.split(';').next().unwrap_or("").trim().to_string();
        let form = match mime.as_str() {
            "application/json" => false,
            "application/x-www-form-urlencoded" => true,
            _ => return Err(ApiError::UnsupportedMediaType),
        };
        // A declared length over the limit is refused before a byte of it is waited for.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > super::MAX_BODY as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else if timed_out(&e) {
                ApiError::BodyTimeout
            } else {
                ApiError::InvalidRequest("unreadable body".into())
            }
        })?;
        let value = if form {
            serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| ApiError::InvalidRequest(format!("bad form body: {e}")))?
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::InvalidRequest(format!("bad JSON body: {}", short(&e.to_string())))
            })?
        };
        Ok(Body { value, form })
    }
}

/// Whether a body failed because `--body-timeout` passed (tower-http's deadline error,
/// somewhere in the rejection's source chain).
fn timed_out(e: &axum::extract::rejection::BytesRejection) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>()
            || err.to_string().contains("designated timeout")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

// serde's messages can quote input; keep them short and never echo a whole token.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The Bearer token of a request: `Ok(None)` when there is none.
pub fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| ApiError::InvalidRequest("Authorization header is not ASCII".into()))?
        .trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(ApiError::InvalidRequest("Bearer without a token".into()));
    }
    Ok(Some(token))
}

/// A request with a valid access token of a session that is not revoked.
pub struct Authed(pub Claims);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or(ApiError::MissingToken)?;
        state.service.authenticate(token).map(Authed)
    }
}

/// An authenticated request from a user who has the `admin` role NOW. The token's `roles`
/// claim is what the user had when it was signed; a demotion must close `/admin/*` at once,
/// not when that token expires, so the live roles of that exact subject decide: the users
/// directory (with admin overrides), or for a minted or hooked user the roles last
/// registered for it in the store.
pub struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authed(c) = Authed::from_request_parts(parts, state).await?;
        let roles = state.service.live_roles(&c.sub).await?;
        if roles.iter().any(|r| r == "admin") {
            Ok(Admin(c))
        } else {
            Err(ApiError::InsufficientScope("admin"))
        }
    }
}

/// The client's address: the socket peer, or with `--trust-proxy` the RIGHTMOST
/// `X-Forwarded-For` entry, the address our nearest proxy saw. Entries to its left were
/// written by the client (or proxies we know nothing about) and can say anything, so they
/// never key the login limit nor the `ip` claim. A proxy must append (nginx:
/// `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`) or overwrite
/// (`... $remote_addr;`); a rightmost entry that is not an IP address is ignored.
pub struct ClientIp(pub String);

/// The rightmost `X-Forwarded-For` entry if it is an IP address. Several header lines count
/// as one comma list in order (RFC 9110 §5.3), so the rightmost is on the last line.
pub fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.trust_proxy {
            if let Some(ip) = forwarded_for(&parts.headers) {
                return Ok(ClientIp(ip.to_string()));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<super::direct::Peer>>()
            .map(|c| c.0 .0.ip().to_string());
        Ok(ClientIp(peer.unwrap_or_else(|| "unknown".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request};
    use proptest::prelude::*;

    fn parts(values: &[HeaderValue]) -> Parts {
        let mut req = Request::builder().uri("/api/me");
        for v in values {
            req = req.header(header::AUTHORIZATION, v.clone());
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_header_edge_cases() {
        let one = |v: &str| {
            bearer(&parts(&[HeaderValue::from_str(v).unwrap()])).map(|t| t.map(str::to_string))
        };
        assert_eq!(one("Bearer abc").unwrap().as_deref(), Some("abc"));
        assert_eq!(one("bEaReR   abc  ").unwrap().as_deref(), Some("abc"));
        assert_eq!(one("Basic abc").unwrap(), None);
        assert!(matches!(one("Bearer"), Err(ApiError::InvalidRequest(_))));
        assert!(matches!(
            one("Bearer    "),
            Err(ApiError::InvalidRequest(_))
        ));
        let two = [
            HeaderValue::from_static("Bearer a"),
            HeaderValue::from_static("Bearer b"),
        ];
        assert!(matches!(
            bearer(&parts(&two)),
            Err(ApiError::InvalidRequest(_))
        ));
        let latin1 = HeaderValue::from_bytes(b"Bearer \xe9t\xe9").unwrap();
        assert!(matches!(
            bearer(&parts(&[latin1])),
            Err(ApiError::InvalidRequest(_))
        ));
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_entry() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(forwarded_for(&h), None);
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        assert_eq!(forwarded_for(&h), Some([2, 2, 2, 2].into()));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("3.3.3.3,  ::1 "),
        );
        assert_eq!(
            forwarded_for(&h),
            Some(std::net::Ipv6Addr::LOCALHOST.into())
        );
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("4.4.4.4, unknown"),
        );
        assert_eq!(forwarded_for(&h), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes a client can put in Authorization (one header or two): no panic; a
        /// token is only ever returned for the Bearer scheme and is never empty or padded.
        #[test]
        fn bearer_never_panics(
            scheme in prop_oneof![Just(""), Just("Bearer "), Just("bEARER"), Just(" bearer\t ")],
            // Mostly bytes a header value may hold, so most cases get past hyper's check.
            tail in proptest::collection::vec(prop_oneof![9 => 0x20u8..=0xff, 1 => any::<u8>()], 0..80),
            twice in any::<bool>(),
        ) {
            let raw = [scheme.as_bytes(), &tail].concat();
            let Ok(v) = HeaderValue::from_bytes(&raw) else {
                return Ok(()); // not a header value hyper would ever hand us
            };
            let values = if twice { vec![v.clone(), v] } else { vec![v] };
            match bearer(&parts(&values)) {
                Ok(Some(token)) => {
                    prop_assert!(!twice);
                    prop_assert!(!token.is_empty() && token.trim() == token);
                    let text = std::str::from_utf8(&raw).unwrap().trim_start();
                    prop_assert!(text[..6].eq_ignore_ascii_case("bearer"));
                }
                Ok(None) => prop_assert!(!twice),
                Err(e) => prop_assert!(matches!(e, ApiError::InvalidRequest(_))),
            }
        }
    }
}
