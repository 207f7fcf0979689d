//! Validated names: node, tenant, device kind and locality domain.
//!
//! A name is 1 to `MAX_NAME_CHARS` characters of lowercase ASCII letters, digits, `-`, `_` and
//! `.`, starting with a letter or digit, so that it is safe in paths, metrics labels and logs.
//! Names are compared bytewise; this module never normalises or guesses.

use crate::limits::MAX_NAME_CHARS;
use crate::outcome::Rejection;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Checks a name against the rules in this module's header; `field` names it in the error.
pub fn validate_name(field: &str, value: &str) -> Result<(), Rejection> {
    let problem = if value.is_empty() {
        Some("must not be empty".to_string())
    } else if value.chars().count() > MAX_NAME_CHARS {
        Some(format!("is longer than {MAX_NAME_CHARS} characters"))
    } else if !value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Some("must start with a lowercase letter or a digit".to_string())
    } else {
        value
            .chars()
            .find(|c| {
                !(c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || *c == '-'
                    || *c == '_'
                    || *c == '.')
            })
            .map(|bad| format!("contains {bad:?}; use lowercase letters, digits, '-', '_' and '.'"))
    };
    match problem {
        Some(problem) => Err(Rejection::invalid(field, format!("{value:?} {problem}"))),
        None => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, Rejection> {
                let value = value.into();
                validate_name($field, &value)?;
                Ok($name(value))
            }

            /// Re-validates a name that arrived inside a decoded entry.
            pub fn validate(&self, field: &str) -> Result<(), Rejection> {
                validate_name(field, &self.0)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A node's name, unique among registered nodes (for example a host name).
    NodeName,
    "node"
);
name_type!(
    /// A tenant: the team or account that owns jobs and is limited in how many it may run.
    TenantName,
    "tenant"
);
name_type!(
    /// A device kind such as `h100`, `a100` or `sim`; a job runs only on devices of its kind.
    DeviceKind,
    "device_kind"
);
name_type!(
    /// A locality domain (a rack, a switch, an NVLink island): ranks of a gang prefer one.
    LocalityDomain,
    "locality_domain"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass_and_bad_names_say_why() {
        assert!(NodeName::new("gpu-node-01.rack3").is_ok());
        assert!(DeviceKind::new("h100").is_ok());
        let err = NodeName::new("").unwrap_err().to_string();
        assert!(err.contains("node") && err.contains("empty"), "{err}");
        let err = TenantName::new("teamA").unwrap_err().to_string();
        assert!(err.contains("tenant") && err.contains("'A'"), "{err}");
        let err = DeviceKind::new("-h100").unwrap_err().to_string();
        assert!(err.contains("must start"), "{err}");
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        assert!(LocalityDomain::new(long).is_err());
    }
}
