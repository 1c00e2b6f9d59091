//! Matrixon: a Matrix homeserver whose identity layer is Ethereum-native.
//!
//! Data flows one way: [`http`] decodes a request, an [`api`] handler calls a [`service`],
//! and the service talks to the [`store`].

pub mod api;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
mod serve;
pub mod server;
pub mod service;
pub mod store;

pub use config::Config;
pub use server::Server;
