//! Identity: the PLC directory client, handle resolution, the key handover and the
//! user-signed operations after it.

pub mod handle;
pub mod handover;
pub mod leave;
pub mod operations;
pub mod plc;
