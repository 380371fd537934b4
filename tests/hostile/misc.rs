//! Hostile clients: log secrecy at trace level and browser hardening headers.
