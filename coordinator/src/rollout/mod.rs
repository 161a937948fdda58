//! The rolling restart: per-node state machines ([`node`]) admitted by a scheduler
//! ([`scheduler`]) and stepped together ([`state`]) over what is observed ([`observe`]); the
//! engine that drives them against the cluster ([`engine`]) and the report it ends with
//! ([`report`]). Everything but the engine is pure and tested against scripted observations; the
//! engine is tested against an in-memory cluster (`tests/model.rs`) as well as real Redis.

pub mod abort;
pub mod balance;
pub mod engine;
pub mod io;
mod leave;
mod ms;
pub mod node;
pub mod observe;
pub mod policy;
mod ready;
pub mod rebalance;
mod replace;
pub mod report;
pub mod scheduler;
pub mod state;
pub mod targets;
#[cfg(test)]
mod testkit;

pub use abort::Abort;
pub use policy::*;
pub use state::Rollout;
