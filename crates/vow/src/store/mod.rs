//! Storage, the floor below the services: the SQLite metadata database (`db`, which holds
//! every SQL statement of the server), the block stores (`blocks`: embedded or IPFS) and the
//! Kubo RPC client (`ipfs`). It knows nothing of the floors above.

pub mod blocks;
pub mod db;
pub mod ipfs;
