//! Browser hardening: the security headers of the pages we serve (CSP, nosniff, no referrer,
//! no framing) and CORS for single-page apps on the origins of `--allowed-origins`.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

/// Content-Security-Policy of every static file: only our own scripts, styles and
/// connections; no inline script or style, no plugins, never inside a frame.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Headers every static file gets besides its CSP.
pub const STATIC_HEADERS: [(HeaderName, &str); 3] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    // `frame-ancestors` for browsers that predate it.
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// The page's CSP with the WebSocket origins of the host it was loaded from spelled out:
/// CSP3 lets `'self'` match `ws:`/`wss:` on the same host, but older browsers need them
/// named. The `Host` is the client's to choose, so it is used only when it is a plain
/// `host[:port]`; anything else gets the policy without them.
pub fn page_csp(headers: &HeaderMap) -> HeaderValue {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let csp = match host {
        Some(h) => CSP.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' ws://{h} wss://{h}"),
        ),
        None => CSP.to_string(),
    };
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(CSP))
}

/// CORS for the JSON routes, allowing exactly `--allowed-origins` (`*` for any), without
/// credentials: our tokens travel in the `Authorization` header and the body, never in
/// cookies, so a cross-origin app needs no credentialed requests. `None` with the default
/// list (only our own origin), which needs no CORS at all: other origins then get no
/// `Access-Control-Allow-*` header and the browser blocks them.
pub fn cors(config: &Config) -> Option<CorsLayer> {
    let list = &config.allowed_origins;
    if list.is_empty() {
        return None;
    }
    let origins = if list.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed: Vec<HeaderValue> = list
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o.trim_end_matches('/')) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "ignoring an --allowed-origins entry that is not a valid origin");
                    None
                }
            })
            .collect();
        AllowOrigin::list(parsed)
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(Duration::from_secs(600)),
    )
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`, by the same rule as
/// [`cors`]: for the SSE responses that `http::direct` writes without tower's layers.
pub fn cors_origin(allowed: &[String], origin: &str) -> Option<String> {
    if allowed.iter().any(|o| o == "*") {
        Some("*".into())
    } else if allowed.iter().any(|o| o.trim_end_matches('/') == origin) {
        Some(origin.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn page_csp_names_our_websocket_origin_only_for_a_plain_host() {
        let csp = page_csp(&with_host("127.0.0.1:8080"));
        let csp = csp.to_str().unwrap();
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        for evil in ["a; script-src *", "a b", "x@evil", ""] {
            let csp = page_csp(&with_host(evil));
            assert_eq!(csp.to_str().unwrap(), CSP, "host {evil:?}");
        }
        assert_eq!(page_csp(&HeaderMap::new()).to_str().unwrap(), CSP);
    }

    #[test]
    fn direct_path_cors_follows_the_list() {
        let list = vec!["http://app.example/".to_string()];
        assert_eq!(
            cors_origin(&list, "http://app.example").as_deref(),
            Some("http://app.example")
        );
        assert_eq!(cors_origin(&list, "http://evil.example"), None);
        assert_eq!(cors_origin(&[], "http://app.example"), None);
        assert_eq!(
            cors_origin(&["*".to_string()], "http://x").as_deref(),
            Some("*")
        );
    }
}
