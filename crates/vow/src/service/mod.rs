//! The services, the floor below the composition: each a struct (or functions) built from
//! exactly what it uses, owning one job. They never see `AppState` or a handler; they use
//! the storage floor (`crate::store`) and the protocol crate.

pub mod auth;
pub mod blobs;
pub mod bounded;
pub mod crawl;
pub mod doctor;
pub mod events;
pub mod firehose;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod mail;
pub mod metrics;
pub mod mime;
pub mod net;
pub mod oauth;
pub mod proxy;
pub mod ratelimit;
pub mod repo;
pub mod signer;
pub mod webauthn;
