//! Everything Matrixon knows about chains, with no Matrix and no database in it.
//!
//! `siwe` verifies Sign-In with Ethereum messages, `rpc` reaches chains through failing-over
//! providers, `gate` evaluates gating rules, `ens` resolves names (Universal Resolver,
//! CCIP-Read), `did` turns DIDs into the addresses they control.

pub mod did;
pub mod ens;
pub mod gate;
pub mod rpc;
pub mod siwe;
