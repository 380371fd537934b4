//! Hostile clients: raced login-failure limits and ticket floods, on every store.
