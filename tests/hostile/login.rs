//! Hostile clients: password hashing load, proxy addresses, file permissions, admin demotion, parsing.
