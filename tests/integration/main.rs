//! One integration-test binary: every black-box test module is compiled and linked once.
//!
//! Each scenario is an `async fn(Backend)`; `both_backends!` turns it into one test on SQLite
//! and one on PostgreSQL (skipped, and saying so, when `MATRIXON_TEST_POSTGRES_URL` is unset).

mod anvil;
mod harness;
mod sydent;
mod synapse;
mod tls;
mod webdriver;

mod accounts;
mod chain;
mod cli;
mod clients;
mod crash;
mod dao;
mod directory;
mod discovery;
mod e2ee;
mod errors;
mod examples;
mod federation;
mod gate;
mod gate_attacks;
mod hardening;
mod http1;
mod identity;
mod interop;
mod media;
mod names;
mod oauth;
mod previews;
mod push;
mod registration;
mod rooms;
mod scale_out;
mod search;
mod sessions;
mod sliding_sync;
mod spaces_and_reports;
mod sso;
mod timeline;
mod visibility;
mod voip;
mod wallet;
