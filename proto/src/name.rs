//! Names that end up in Redis keys, channels, `--exec` command lines and reports.
//!
//! Parse, don't validate: a [`NodeName`] can only be built through the key-schema rule, so every
//! function that takes one (key builders, `--exec` rendering, reports) can only ever see a valid
//! name. Whatever is read from Redis or a flag becomes a `NodeName` at the edge or is refused
//! there.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// Largest accepted name (cluster or node), in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A cluster or node name that would break the key schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("name {0:?} has a character other than ASCII letters, digits, '.', '_' or '-'")]
    BadChar(String),
}

/// Checks a cluster or node name: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        // Shown with `{:?}`, so a hostile name cannot put control characters in a log line.
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        return Err(NameError::BadChar(shown));
    }
    Ok(())
}

/// A node name that passed [`validate_name`]: safe in a key, a channel, a shell word and a log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Parses `name`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        validate_name(name)?;
        Ok(NodeName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        validate_name(&name)?;
        Ok(NodeName(name))
    }
}

impl FromStr for NodeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        NodeName::parse(s)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> String {
        name.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_safe_names_parse() {
        assert_eq!(NodeName::parse("node-1.eu_west").unwrap(), "node-1.eu_west");
        assert_eq!(NodeName::parse(""), Err(NameError::Empty));
        assert_eq!(
            NodeName::parse(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong)
        );
        for bad in [
            "evil;touch /tmp/x",
            "a b",
            "a}b",
            "a:b",
            "$(id)",
            "a\nb",
            "ü",
        ] {
            assert!(
                matches!(NodeName::parse(bad), Err(NameError::BadChar(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_refuses_what_parse_refuses() {
        let name: NodeName = serde_json::from_str(r#""web-1""#).unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""web-1""#);
        assert!(serde_json::from_str::<NodeName>(r#""web 1; rm -rf /""#).is_err());
    }
}
