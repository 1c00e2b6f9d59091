//! Everything Matrixon knows about chains, with no Matrix and no database in it.
//!
//! `siwe` verifies Sign-In with Ethereum messages. RPC providers (`rpc`), ENS (`ens`),
//! DIDs (`did`) and gating rules (`gate`) follow.

pub mod rpc;
pub mod siwe;
