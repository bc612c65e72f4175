//! Vow, a Bring-Your-Own-Key Personal Data Server for the AT Protocol.
//!
//! Floors, top to bottom, each using only those below it (see ARCHITECTURE.md):
//! [`http`] (the router, XRPC handlers, pages) and [`cli`]; [`state`] (the composition);
//! [`service`] (the write pipeline, signers, identity, auth, firehose, blobs); [`store`] (the
//! SQLite metadata, the block stores, the IPFS client); then the `atproto` protocol crate.
//! [`config`] and [`error`] are shared by all.

/// Everything Vow runs, tests included, allocates through mimalloc: glibc's allocator spent a
/// tenth of the server's CPU on the write path in its locks and free lists. Memory it holds is
/// handed back as [`service::bounded`] describes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod service;
pub mod state;
pub mod store;
