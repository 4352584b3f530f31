//! The default seccomp filter, in the spirit of Docker's default profile, and a compiler from
//! the OCI spec's `linux.seccomp` section to BPF with seccompiler (pure Rust, no libseccomp).
//!
//! Docker's profile is an allow-list of ~350 calls; what it *effectively* refuses is the short
//! list of calls that reach past a container's namespaces: kernel modules, kexec, keyrings,
//! mounting, new namespaces (notably user namespaces, which need no capability), ptrace and
//! process_vm_*, BPF and perf, clock setting, swap, reboot, io_uring. This profile lists those
//! and refuses them with EPERM (clone3 with ENOSYS, so libc falls back to clone, whose flags a
//! filter can see), and, as Docker does, lets a call through when the container was given the
//! capability that governs it. A deny-list keeps the filter short (fast to run on every call)
//! and free of per-architecture allow-lists that break new programs.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::engine::error::{EngineError, Result};

/// (syscalls, capability that lets them through; None: always refused).
const DENIED: &[(&[&str], Option<&str>)] = &[
    (
        &[
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "quotactl",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "swapon",
            "swapoff",
            "lookup_dcookie",
            "fanotify_init",
        ],
        Some("CAP_SYS_ADMIN"),
    ),
    (&["reboot"], Some("CAP_SYS_BOOT")),
    (
        &["init_module", "finit_module", "delete_module"],
        Some("CAP_SYS_MODULE"),
    ),
    (&["acct"], Some("CAP_SYS_PACCT")),
    (
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
        Some("CAP_SYS_PTRACE"),
    ),
    (&["iopl", "ioperm"], Some("CAP_SYS_RAWIO")),
    (
        &["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"],
        Some("CAP_SYS_TIME"),
    ),
    (
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
        Some("CAP_SYS_NICE"),
    ),
    (&["syslog"], Some("CAP_SYSLOG")),
    (&["vhangup"], Some("CAP_SYS_TTY_CONFIG")),
    (&["bpf"], Some("CAP_BPF")),
    (&["perf_event_open"], Some("CAP_PERFMON")),
    (
        &["open_by_handle_at", "name_to_handle_at"],
        Some("CAP_DAC_READ_SEARCH"),
    ),
    (
        &[
            "add_key",
            "keyctl",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "userfaultfd",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
        None,
    ),
];

/// Namespace flags clone may not carry without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: [u64; 7] = [
    nix::libc::CLONE_NEWNS as u64,
    nix::libc::CLONE_NEWUTS as u64,
    nix::libc::CLONE_NEWIPC as u64,
    nix::libc::CLONE_NEWUSER as u64,
    nix::libc::CLONE_NEWPID as u64,
    nix::libc::CLONE_NEWNET as u64,
    nix::libc::CLONE_NEWCGROUP as u64,
];

/// The default profile for a container holding `caps` (CAP_ names), as an OCI spec section.
pub fn default_profile(caps: &[String]) -> serde_json::Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut names: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !has(c)))
        .flat_map(|(n, _)| n.iter().copied())
        .collect();
    names.sort_unstable();
    let mut syscalls = vec![serde_json::json!({
        "names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": nix::libc::EPERM,
    })];
    syscalls.push(serde_json::json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": nix::libc::ENOSYS,
    }));
    if !has("CAP_SYS_ADMIN") {
        for flag in CLONE_NS_FLAGS {
            syscalls.push(serde_json::json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": nix::libc::EPERM,
                "args": [{"index": clone_flags_arg(), "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls })
}

/// clone's flags argument: first on most architectures.
fn clone_flags_arg() -> u8 {
    0
}

/// Compiles the spec's profile into BPF programs, one per distinct action (a seccompiler filter
/// has one match action); the kernel runs them all and the most restrictive result wins.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        EngineError::Host(format!(
            "seccomp filters are not supported on {} by this build",
            std::env::consts::ARCH
        ))
    })?;
    if profile.default_action() != LinuxSeccompAction::ScmpActAllow {
        return Err(EngineError::InvalidArgument(
            "only seccomp profiles whose defaultAction is SCMP_ACT_ALLOW are supported".into(),
        ));
    }
    // None: the call matches whatever its arguments (seccompiler's empty rule chain).
    type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;
    let mut by_action: BTreeMap<(u8, u32), Rules> = BTreeMap::new();
    for sc in profile.syscalls().iter().flatten() {
        let (key, _) = action_of(sc.action(), sc.errno_ret())?;
        let rule = rules_of(sc.args().as_deref().unwrap_or(&[]))?;
        for name in sc.names() {
            // Calls this architecture lacks are skipped, as libseccomp does.
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            let entry = by_action
                .entry(key)
                .or_default()
                .entry(nr)
                .or_insert_with(|| Some(Vec::new()));
            match (&rule, entry.as_mut()) {
                (Some(r), Some(chain)) => chain.push(r.clone()),
                (None, _) => *entry = None,
                (Some(_), None) => {}
            }
        }
    }
    let mut programs = Vec::new();
    for ((kind, errno), rules) in by_action {
        let rules: BTreeMap<i64, Vec<SeccompRule>> = rules
            .into_iter()
            .map(|(nr, chain)| (nr, chain.unwrap_or_default()))
            .collect();
        let action = if kind == 0 {
            SeccompAction::Errno(errno)
        } else {
            SeccompAction::KillProcess
        };
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
            .map_err(|e| EngineError::InvalidArgument(format!("invalid seccomp profile: {e}")))?;
        let program: BpfProgram = filter.try_into().map_err(|e| {
            EngineError::InvalidArgument(format!("cannot compile seccomp profile: {e}"))
        })?;
        programs.push(program);
    }
    Ok(programs)
}

fn action_of(a: LinuxSeccompAction, errno: Option<u32>) -> Result<((u8, u32), ())> {
    match a {
        LinuxSeccompAction::ScmpActErrno => Ok(((0, errno.unwrap_or(nix::libc::EPERM as u32)), ())),
        LinuxSeccompAction::ScmpActKill
        | LinuxSeccompAction::ScmpActKillProcess
        | LinuxSeccompAction::ScmpActKillThread => Ok(((1, 0), ())),
        other => Err(EngineError::InvalidArgument(format!(
            "seccomp action {other:?} is not supported; use SCMP_ACT_ERRNO or SCMP_ACT_KILL"
        ))),
    }
}

/// All argument conditions of one rule (they must all hold); None when there are none.
fn rules_of(args: &[oci_spec::runtime::LinuxSeccompArg]) -> Result<Option<SeccompRule>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut conds = Vec::new();
    for a in args {
        let op = match a.op() {
            LinuxSeccompOperator::ScmpCmpEq => SeccompCmpOp::Eq,
            LinuxSeccompOperator::ScmpCmpNe => SeccompCmpOp::Ne,
            LinuxSeccompOperator::ScmpCmpLt => SeccompCmpOp::Lt,
            LinuxSeccompOperator::ScmpCmpLe => SeccompCmpOp::Le,
            LinuxSeccompOperator::ScmpCmpGt => SeccompCmpOp::Gt,
            LinuxSeccompOperator::ScmpCmpGe => SeccompCmpOp::Ge,
            LinuxSeccompOperator::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
        };
        let value = match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            _ => a.value(),
        };
        let cond = SeccompCondition::new(a.index() as u8, SeccompCmpArgLen::Qword, op, value)
            .map_err(|e| EngineError::InvalidArgument(format!("invalid seccomp condition: {e}")))?;
        conds.push(cond);
    }
    SeccompRule::new(conds)
        .map(Some)
        .map_err(|e| EngineError::InvalidArgument(format!("invalid seccomp rule: {e}")))
}

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), nix::libc::$name as i64)),*]
    };
}

#[cfg(target_arch = "x86_64")]
const ARCH_ONLY: &[(&str, i64)] = table!(
    SYS_iopl,
    SYS_ioperm,
    SYS_uselib,
    SYS_ustat,
    SYS_sysfs,
    SYS__sysctl,
);
#[cfg(not(target_arch = "x86_64"))]
const ARCH_ONLY: &[(&str, i64)] = &[];

const COMMON: &[(&str, i64)] = table!(
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_unshare,
    SYS_setns,
    SYS_quotactl,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_swapon,
    SYS_swapoff,
    SYS_lookup_dcookie,
    SYS_fanotify_init,
    SYS_reboot,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_acct,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_kcmp,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_get_mempolicy,
    SYS_set_mempolicy,
    SYS_mbind,
    SYS_move_pages,
    SYS_syslog,
    SYS_vhangup,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_add_key,
    SYS_keyctl,
    SYS_request_key,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_userfaultfd,
    SYS_nfsservctl,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_clone,
    SYS_clone3,
);

/// The number of a system call on this architecture, for the calls profiles here name.
pub fn syscall_number(name: &str) -> Option<i64> {
    COMMON
        .iter()
        .chain(ARCH_ONLY)
        .find(|(n, _)| n.strip_prefix("SYS_") == Some(name))
        .map(|(_, nr)| *nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(caps: &[&str]) -> LinuxSeccomp {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        serde_json::from_value(default_profile(&caps)).unwrap()
    }

    fn denied_names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls().clone().unwrap_or_default()[0].names().clone()
    }

    #[test]
    fn default_profile_denies_escapes_and_yields_to_capabilities() {
        let p = profile(&["CAP_CHOWN"]);
        let names = denied_names(&p);
        for n in [
            "mount",
            "unshare",
            "keyctl",
            "bpf",
            "ptrace",
            "reboot",
            "init_module",
        ] {
            assert!(names.contains(&n.to_string()), "{n} should be denied");
        }
        let with_admin = denied_names(&profile(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]));
        assert!(!with_admin.contains(&"mount".to_string()));
        assert!(!with_admin.contains(&"ptrace".to_string()));
        assert!(with_admin.contains(&"keyctl".to_string()));
    }

    #[test]
    fn every_denied_call_is_known_on_x86_64_and_profile_compiles() {
        if cfg!(target_arch = "x86_64") {
            for (names, _) in DENIED {
                for n in *names {
                    assert!(syscall_number(n).is_some(), "no number for {n}");
                }
            }
        }
        let programs = compile(&profile(&[])).unwrap();
        // EPERM and ENOSYS: two distinct actions, two programs.
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }
}
