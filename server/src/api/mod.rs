//! HTTP API handlers: thin functions from a typed request to a service call and back.

pub mod admin;
pub mod client;
pub mod federation;
pub mod media;
pub mod oauth;
pub mod sso;
pub mod wallet;
