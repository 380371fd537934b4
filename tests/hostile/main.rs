//! Hostile and broken clients (issue 10): each module attacks one surface of the real binary
//! without a credential and checks that the server holds. `round2` is issue 19.

#[path = "../common/mod.rs"]
mod common;

mod conn;
mod login;
mod misc;
mod round2;
mod sessions;
