//! Hostile clients: stalled, half-sent and dead connections (header timeout, keep-alive, ping and write timeouts).
