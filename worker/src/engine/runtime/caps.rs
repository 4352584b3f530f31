//! Linux capabilities: names and numbers, Docker's default set, and applying a set to the
//! current process (bounding set, then effective/permitted/inheritable, ambient cleared).
//!
//! The capset(2) and prctl(2) calls have no safe wrapper in nix, hence the unsafe blocks here.

use crate::engine::error::{EngineError, Result};

/// Every capability name (without CAP_) at its number.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby's oci/caps/defaults.go).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The number of a capability given as `CAP_X`, `X` or `x`.
pub fn number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// Docker's defaults plus `add` minus `drop` (either may say ALL), as `CAP_` names.
pub fn resolve(add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let check = |n: &String| {
        if n.eq_ignore_ascii_case("ALL") || number(n).is_some() {
            Ok(())
        } else {
            Err(EngineError::InvalidArgument(format!(
                "unknown capability {n:?}; use names like NET_ADMIN or CAP_NET_ADMIN"
            )))
        }
    };
    add.iter().chain(drop).try_for_each(check)?;
    let mut set: Vec<u32> = DOCKER_DEFAULT.iter().filter_map(|n| number(n)).collect();
    if add.iter().any(|n| n.eq_ignore_ascii_case("ALL")) {
        set = (0..NAMES.len() as u32).collect();
    } else {
        set.extend(add.iter().filter_map(|n| number(n)));
    }
    if drop.iter().any(|n| n.eq_ignore_ascii_case("ALL")) {
        set.retain(|c| add.iter().any(|a| number(a) == Some(*c)));
    } else {
        set.retain(|c| !drop.iter().any(|d| number(d) == Some(*c)));
    }
    set.sort_unstable();
    set.dedup();
    Ok(set
        .into_iter()
        .map(|c| format!("CAP_{}", NAMES[c as usize]))
        .collect())
}

/// A set of `CAP_` names as a bit mask; unknown names are refused.
pub fn mask(names: &[String]) -> Result<u64> {
    names.iter().try_fold(0u64, |m, n| {
        number(n).map(|c| m | (1u64 << c)).ok_or_else(|| {
            EngineError::InvalidArgument(format!("unknown capability {n:?} in the runtime spec"))
        })
    })
}

/// The highest capability this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in `keep` from the bounding set. Needs CAP_SETPCAP.
pub fn drop_bounding(keep: u64, last: u32) -> std::io::Result<()> {
    for cap in 0..=last {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes only integers and touches no memory.
            let rc = unsafe {
                nix::libc::prctl(
                    nix::libc::PR_CAPBSET_DROP,
                    cap as nix::libc::c_ulong,
                    0,
                    0,
                    0,
                )
            };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                // EINVAL: the kernel does not know this one; nothing to drop.
                if err.raw_os_error() != Some(nix::libc::EINVAL) {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets effective and permitted to `caps`, empties inheritable and ambient (as Docker does).
pub fn set_process_caps(caps: u64) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = caps as u32;
    let hi = (caps >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data are valid, properly laid out (repr(C)) for capset v3, which reads
    // exactly one header and two data structs and writes nothing.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_set_has_the_well_known_mask() {
        let set = resolve(&[], &[]).unwrap();
        assert_eq!(mask(&set).unwrap(), 0xa80425fb);
    }

    #[test]
    fn add_and_drop_follow_docker() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let set = resolve(&s(&["NET_ADMIN"]), &s(&["cap_mknod"])).unwrap();
        assert!(set.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!set.contains(&"CAP_MKNOD".to_string()));
        let only = resolve(&s(&["KILL"]), &s(&["ALL"])).unwrap();
        assert_eq!(only, vec!["CAP_KILL"]);
        assert_eq!(resolve(&s(&["ALL"]), &[]).unwrap().len(), 41);
        let err = resolve(&s(&["FLY"]), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown capability"), "{err}");
    }
}
