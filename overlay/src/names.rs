//! Names derived from an attachment's key (a task ID, or a container key): the namespace file
//! is the key itself, the host end of the veth pair a short hash of it, because interface names
//! hold at most 15 bytes while task IDs are 25 characters and container IDs 64.

use crate::error::{NetworkError, Result};

/// Longest key accepted: a file name, with room to spare under NAME_MAX (255).
pub const MAX_KEY_LEN: usize = 128;

/// Prefix of every host-side veth we make, so `ip link` shows whose they are.
pub const VETH_PREFIX: &str = "shv";

/// Checks that a key can name a file in the namespace directory: no separators, no dot files,
/// nothing a shell or `ip netns` would trip on.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(NetworkError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("it is too long");
    }
    if !key.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("it holds a character other than letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// The host end of a key's veth pair: `shv` + 12 hex digits of a 64-bit FNV-1a hash (15 bytes,
/// the kernel's limit). Stable across restarts, so a re-attach finds the pair it made before;
/// 48 bits make a collision between two keys on one node vanishingly unlikely.
pub fn host_veth(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{VETH_PREFIX}{:012x}", h >> 16)
}

/// A valid Linux interface name: 1 to 15 bytes, none of '/', ':', whitespace; not "." or "..".
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidConfig(format!(
            "bridge name {name:?} is not a valid interface name: use 1 to 15 letters, digits, \
             '_', '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit_and_are_stable() {
        for key in [
            "a",
            "x5kq2m9p0a1b2c3d4e5f6g7h8",
            &"f".repeat(64),
            &"k".repeat(MAX_KEY_LEN),
        ] {
            let n = host_veth(key);
            assert_eq!(n.len(), 15, "{n}");
            assert!(n.starts_with(VETH_PREFIX));
            validate_ifname(&n).unwrap();
            assert_eq!(n, host_veth(key));
        }
    }

    #[test]
    fn similar_keys_get_different_veths() {
        let names: std::collections::HashSet<String> = (0..10_000)
            .map(|i| host_veth(&format!("task{i}")))
            .chain((0..10_000).map(|i| host_veth(&format!("{i:064x}"))))
            .collect();
        assert_eq!(names.len(), 20_000);
    }

    #[test]
    fn keys_must_be_plain_file_names() {
        for good in ["a", "ctr-0123abcd", "x5kq2m9p0a1b2c3d4e5f6g7h8", "web.1_x"] {
            validate_key(good).unwrap();
        }
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "../etc", "a b", "é", "a\0",
        ] {
            let e = validate_key(bad).unwrap_err().to_string();
            assert!(e.contains("letters, digits"), "{bad:?}: {e}");
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn bridge_names_are_checked() {
        validate_ifname("shoal0").unwrap();
        for bad in ["", "a/b", "with space", "sixteen-chars-xx", "a:b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
