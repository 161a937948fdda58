//! ebb-client: WebSocket clients for fleets that drain.
//!
//! Layout:
//! - [`connect`]: one WebSocket connection, optionally from a chosen source address (so a load
//!   generator can open more connections than one address has ephemeral ports);
//! - [`load`]: the modes of the `ebb-load` generator.

pub mod connect;
pub mod load;
