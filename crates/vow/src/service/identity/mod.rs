//! Identity: the PLC directory client and handle resolution.

pub mod handle;
pub mod handover;
pub mod leave;
pub mod plc;
