//! Image references as people type them (`busybox`, `busybox:1.36`, `registry:5000/app:v2`,
//! `docker.io/library/busybox`), normalized to one `name:tag` form so that `busybox` and
//! `docker.io/library/busybox:latest` name the same image, as in Docker.

use crate::engine::error::{EngineError, Result};

/// A normalized `name:tag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

impl Reference {
    /// Parses and normalizes; a missing tag is `latest`.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |why: &str| {
            EngineError::InvalidArgument(format!(
                "invalid image reference {input:?}: {why}; use NAME[:TAG], e.g. busybox:latest"
            ))
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        if input.contains('@') {
            return Err(bad("digest references are not supported here"));
        }
        // A colon after the last slash separates the tag; one before it belongs to a port.
        let last_slash = input.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match input[last_slash..].rfind(':') {
            Some(i) => (&input[..last_slash + i], &input[last_slash + i + 1..]),
            None => (input, "latest"),
        };
        if tag.is_empty() || tag.len() > 128 {
            return Err(bad("the tag must be 1 to 128 characters"));
        }
        if !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            || tag.starts_with(['.', '-'])
        {
            return Err(bad(
                "the tag may hold only letters, digits, '_', '.' and '-'",
            ));
        }
        if name.is_empty() || name.len() > 255 {
            return Err(bad("the name must be 1 to 255 characters"));
        }
        for (i, part) in name.split('/').enumerate() {
            let host_part = i == 0 && name.contains('/') && part.contains([':', '.']);
            let ok = !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'_' | b'-')
                        || (host_part && (b == b':' || b.is_ascii_uppercase()))
                });
            if !ok {
                return Err(bad(
                    "name components may hold only lowercase letters, digits, '.', '_' and '-'",
                ));
            }
        }
        let name = name
            .strip_prefix("docker.io/library/")
            .or_else(|| name.strip_prefix("docker.io/"))
            .or_else(|| name.strip_prefix("library/"))
            .unwrap_or(name);
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("busybox"), "busybox:latest");
        assert_eq!(norm("busybox:1.36"), "busybox:1.36");
        assert_eq!(norm("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(norm("docker.io/me/app:v1"), "me/app:v1");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("localhost:5000/app:v2"), "localhost:5000/app:v2");
    }

    #[test]
    fn refuses_bad_references_with_a_hint() {
        for bad in [
            "",
            "Busybox",
            "a:b:c",
            "app:",
            "app:-x",
            "a//b",
            "x@sha256:ab",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains("NAME[:TAG]"), "{bad}: {err}");
        }
    }
}
