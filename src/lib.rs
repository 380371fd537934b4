//! tokenpush: short-lived JWT access tokens and rotating refresh tokens, pushed down SSE and
//! WebSocket channels before they expire.
//!
//! - [`config`]: CLI flags and `TOKENPUSH_*` env vars.
//! - [`error`]: the one error enum (its HTTP mapping lives in `http::error`).
//! - [`clock`]: the clock handle (system or manual), unix milliseconds.
//! - [`tokens`]: keys and JWKS, access JWTs, refresh tokens `<sid>.<gen>.<mac>`.
//! - [`sessions`]: the session record, the rotation rule, stores (memory, SQLite, Redis).
//! - [`users`]: users file, demo users, argon2id.
//! - [`external`]: identities of users minted by a trusted backend or the login hook.
//! - [`login_hook`]: `--login-hook`, the app's own credential check.
//! - [`hub`]: live channels, renewal scheduler, cluster bus.
//! - [`service`]: login, redeem, confirm, renew, revoke — what handlers and the scheduler call.
//! - [`http`]: router, extractors and handlers.
//! - [`server`]: startup, connections, background loops and graceful shutdown.
//! - [`metrics`]: Prometheus metrics.

pub mod clock;
pub mod config;
pub mod error;
pub mod external;
pub mod http;
pub mod hub;
pub mod login_hook;
pub mod metrics;
pub mod server;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use server::Server;
