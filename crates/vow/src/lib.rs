//! Vow, a Bring-Your-Own-Key Personal Data Server for the AT Protocol.
//!
//! Layers, data flowing one way: [`xrpc`] handlers parse input and call services; [`auth`],
//! [`identity`], [`repo`] and [`signer`] hold the logic; [`db`] is the SQLite metadata and
//! [`storage`] the block store.

pub mod auth;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod crawl;
pub mod db;
pub mod edge;
pub mod error;
pub mod events;
pub mod firehose;
pub mod identity;
pub mod ipfs;
pub mod keys;
pub mod mime;
pub mod repo;
pub mod server;
pub mod signer;
pub mod state;
pub mod storage;
pub mod web;
pub mod webauthn;
pub mod wellknown;
pub mod xrpc;
