//! `resume`: a drained (or draining) node that stayed up becomes active again.

use serde::{Deserialize, Serialize};

/// Arguments of a resume command (none yet; an object so fields can be added).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {}

impl Resume {
    pub(super) fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
