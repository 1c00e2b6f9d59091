//! Everything Matrixon knows about chains, with no Matrix and no database in it.
//!
//! The chain-layer issue fills this crate: RPC providers (`rpc`), Sign-In with Ethereum
//! (`siwe`), ENS (`ens`), DIDs (`did`) and gating rules (`gate`). It is a workspace member
//! now so that the crate boundary exists before the code that needs it.
