//! From what the user (or the executor) asked for to an OCI runtime spec: the image config
//! supplies defaults that the container spec overrides, Docker's way, and everything a
//! container gets without asking (namespaces, /proc and /dev, masked paths, capabilities,
//! seccomp, rlimits) is written out explicitly, so `config.json` alone says how it runs.
//!
//! Pure logic: no file is read or written here, so every rule is unit-tested.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use serde_json::{Value, json};
use shoal_proto::{ContainerSpec, HealthConfig, ImageConfig, Resources, mount};

use super::{caps, seccomp};
use crate::engine::error::{EngineError, Result};

/// Annotations carrying what the OCI spec has no field for; the init reads them.
pub const ANN_USER: &str = "io.shoal.user";
pub const ANN_GROUPS: &str = "io.shoal.groups";

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// cgroup CPU period used with --cpus, as Docker.
const CPU_PERIOD: u64 = 100_000;
/// Docker's floor for --memory.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// runc's (and Docker's) masked and read-only paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the spec is made from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub spec: &'a ContainerSpec,
    pub limits: &'a Resources,
    pub cpu_shares: Option<u64>,
    pub image: &'a ImageConfig,
    /// A network namespace to join; None: a fresh one.
    pub netns: Option<&'a str>,
    /// e.g. `/shoal/<id>`.
    pub cgroups_path: &'a str,
    /// Directory holding the container's hostname, hosts and resolv.conf files.
    pub files_dir: &'a Path,
    /// CPUs on this node, to check --cpus against.
    pub ncpu: i64,
}

/// The spec and the merged values that live outside it.
#[derive(Debug)]
pub struct Built {
    pub spec: Spec,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: String,
    pub stop_grace: Duration,
    pub healthcheck: Option<HealthConfig>,
}

/// Merges image defaults and the container spec into an OCI runtime spec.
pub fn build(input: &SpecInput) -> Result<Built> {
    let (spec, image) = (input.spec, input.image);
    let args = command(spec, image)?;
    let hostname = if spec.hostname.is_empty() {
        input.id.chars().take(12).collect()
    } else {
        validate_hostname(&spec.hostname)?;
        spec.hostname.clone()
    };
    let env = merge_env(&image.env, &spec.env, &hostname)?;
    let cwd = first_non_empty(&spec.dir, &image.working_dir)
        .unwrap_or("/")
        .to_string();
    if !cwd.starts_with('/') {
        return Err(EngineError::InvalidArgument(format!(
            "working directory {cwd:?} is not absolute; give a path starting with /"
        )));
    }
    let user = first_non_empty(&spec.user, &image.user)
        .unwrap_or("")
        .to_string();
    let (uid, gid) = numeric_user(&user);
    let stop_signal = first_non_empty(&spec.stop_signal, &image.stop_signal)
        .unwrap_or("SIGTERM")
        .to_string();
    parse_signal(&stop_signal)?;
    let stop_grace = spec
        .stop_grace_period
        .as_ref()
        .map(|d| d.to_std())
        .unwrap_or(DEFAULT_STOP_GRACE);
    let healthcheck = match &spec.healthcheck {
        Some(h) if !h.test.is_empty() => Some(h.clone()),
        _ => image.healthcheck.clone(),
    }
    .filter(|h| h.test.first().map(String::as_str) != Some("NONE"));

    let capabilities = caps::resolve(&spec.capability_add, &spec.capability_drop)?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANN_USER.into(), json!(user));
    if !spec.groups.is_empty() {
        annotations.insert(ANN_GROUPS.into(), json!(spec.groups.join(",")));
    }
    for (k, v) in &spec.labels {
        annotations.insert(format!("io.shoal.label.{k}"), json!(v));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    namespaces.push(match input.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });

    let value = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": spec.read_only},
        "hostname": hostname,
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities, "effective": capabilities, "permitted": capabilities,
                "inheritable": [], "ambient": [],
            },
            "rlimits": rlimits(&spec.ulimits)?,
            "noNewPrivileges": true,
        },
        "mounts": mounts(spec, input.files_dir)?,
        "annotations": annotations,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroups_path,
            "resources": resources(input)?,
            "devices": devices(),
            "rootfsPropagation": "rprivate",
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp::default_profile(&capabilities),
            "sysctl": sysctls(spec)?,
        },
    });
    let spec_out: Spec = serde_json::from_value(value)
        .map_err(|e| EngineError::Internal(format!("generated runtime spec is invalid: {e}")))?;
    Ok(Built {
        spec: spec_out,
        args,
        env,
        cwd,
        user,
        hostname,
        stop_signal,
        stop_grace,
        healthcheck,
    })
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    [a, b].into_iter().find(|s| !s.is_empty())
}

/// Entrypoint + Cmd, as Docker combines them: a new entrypoint drops the image's Cmd.
fn command(spec: &ContainerSpec, image: &ImageConfig) -> Result<Vec<String>> {
    let entrypoint = if spec.command.is_empty() {
        &image.entrypoint
    } else {
        &spec.command
    };
    let cmd: &[String] = if !spec.args.is_empty() {
        &spec.args
    } else if spec.command.is_empty() {
        &image.cmd
    } else {
        &[]
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(EngineError::InvalidArgument(
            "no command to run: the image has no Entrypoint or Cmd; give one after the image \
             name, e.g. `shoal container run IMAGE sh`"
                .into(),
        ));
    }
    Ok(args)
}

/// Image env, then the spec's (same key: the spec wins), then HOSTNAME and a default PATH.
fn merge_env(image: &[String], spec: &[String], hostname: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
    for kv in image.iter().chain(spec) {
        let k = key(kv);
        if k.is_empty() || !kv.contains('=') {
            return Err(EngineError::InvalidArgument(format!(
                "environment entry {kv:?} is not KEY=VALUE"
            )));
        }
        out.retain(|e| key(e) != k);
        out.push(kv.clone());
    }
    if !out.iter().any(|e| key(e) == "PATH") {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    if !out.iter().any(|e| key(e) == "HOSTNAME") {
        out.insert(1, format!("HOSTNAME={hostname}"));
    }
    Ok(out)
}

fn validate_hostname(h: &str) -> Result<()> {
    let ok = h.len() <= 64
        && h.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidArgument(format!(
            "hostname {h:?} is invalid: use letters, digits, '-' and '.', at most 64 characters"
        )))
    }
}

/// `uid[:gid]` when numeric; names are resolved by the init from the container's /etc/passwd.
fn numeric_user(user: &str) -> (u32, u32) {
    let mut parts = user.splitn(2, ':');
    let uid = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = parts.next().and_then(|g| g.parse().ok()).unwrap_or(0);
    (uid, gid)
}

/// A signal by name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || {
        EngineError::InvalidArgument(format!(
            "invalid signal {s:?}; use a name like SIGTERM or KILL, or a number"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// The default filesystems, then the user's mounts, then the container's own /etc files.
fn mounts(spec: &ContainerSpec, files_dir: &Path) -> Result<Vec<Value>> {
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        // nodev: device nodes a container makes (it has CAP_MKNOD) cannot be opened; the few
        // it needs are bind-mounted from the host.
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &spec.mounts {
        let target = clean_target(&m.target)?;
        match mount::Type::try_from(m.r#type).unwrap_or_default() {
            mount::Type::Bind => {
                if !m.source.starts_with('/') {
                    return Err(EngineError::InvalidArgument(format!(
                        "bind mount source {:?} is not an absolute path",
                        m.source
                    )));
                }
                let mut options = vec!["rbind", "rprivate"];
                if m.read_only {
                    options.push("ro");
                }
                out.push(json!({"destination": target, "type": "bind", "source": m.source, "options": options}));
            }
            mount::Type::Tmpfs => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if m.tmpfs_size_bytes > 0 {
                    options.push(format!("size={}", m.tmpfs_size_bytes));
                }
                options.push(format!(
                    "mode={:o}",
                    if m.tmpfs_mode == 0 {
                        0o1777
                    } else {
                        m.tmpfs_mode
                    }
                ));
                if m.read_only {
                    options.push("ro".into());
                }
                out.push(json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options}));
            }
            mount::Type::Volume => {
                return Err(EngineError::InvalidArgument(format!(
                    "volume mounts are not supported yet (target {target}); use a bind mount \
                     of a host directory instead"
                )));
            }
        }
    }
    for file in ["hostname", "hosts", "resolv.conf"] {
        let dest = format!("/etc/{file}");
        if spec
            .mounts
            .iter()
            .any(|m| m.target.trim_end_matches('/') == dest)
        {
            continue;
        }
        out.push(json!({
            "destination": dest, "type": "bind",
            "source": files_dir.join(file), "options": ["rbind", "rprivate"],
        }));
    }
    Ok(out)
}

/// A mount target: absolute, no `..`, not the root itself.
fn clean_target(t: &str) -> Result<String> {
    let ok =
        t.starts_with('/') && !t.split('/').any(|p| p == "..") && !t.trim_matches('/').is_empty();
    if ok {
        Ok(t.to_string())
    } else {
        Err(EngineError::InvalidArgument(format!(
            "mount target {t:?} is invalid: give an absolute path inside the container, \
             without '..', other than /"
        )))
    }
}

/// The device nodes every container gets (bind-mounted from the host's).
fn devices() -> Vec<Value> {
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
        .iter()
        .map(|(n, major, minor)| {
            json!({"path": format!("/dev/{n}"), "type": "c", "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0})
        })
        .collect()
}

/// Memory, CPU and pids limits, checked the way Docker checks them.
fn resources(input: &SpecInput) -> Result<Value> {
    let l = input.limits;
    if l.memory_bytes < 0 || l.nano_cpus < 0 {
        return Err(EngineError::InvalidArgument(
            "memory and CPU limits cannot be negative".into(),
        ));
    }
    let mut out = serde_json::Map::new();
    if l.memory_bytes != 0 {
        if l.memory_bytes < MIN_MEMORY {
            return Err(EngineError::InvalidArgument(format!(
                "memory limit {} bytes is too low: the minimum is 6MiB (e.g. --memory 64m)",
                l.memory_bytes
            )));
        }
        out.insert(
            "memory".into(),
            json!({"limit": l.memory_bytes, "swap": l.memory_bytes}),
        );
    }
    let mut cpu = serde_json::Map::new();
    if l.nano_cpus != 0 {
        let max = input.ncpu.max(1) * 1_000_000_000;
        if l.nano_cpus < 10_000_000 || l.nano_cpus > max {
            return Err(EngineError::InvalidArgument(format!(
                "CPU limit {:.2} is out of range: use 0.01 to {}.00 (this node has {} CPUs)",
                l.nano_cpus as f64 / 1e9,
                input.ncpu,
                input.ncpu
            )));
        }
        cpu.insert(
            "quota".into(),
            json!(l.nano_cpus * CPU_PERIOD as i64 / 1_000_000_000),
        );
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if let Some(shares) = input.cpu_shares {
        if !(2..=262_144).contains(&shares) {
            return Err(EngineError::InvalidArgument(format!(
                "CPU shares {shares} out of range: use 2 to 262144 (default 1024)"
            )));
        }
        cpu.insert("shares".into(), json!(shares));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if l.pids != 0 {
        if l.pids < -1 {
            return Err(EngineError::InvalidArgument(format!(
                "pids limit {} is invalid: use a positive number, or -1 for no limit",
                l.pids
            )));
        }
        out.insert("pids".into(), json!({"limit": l.pids}));
    }
    Ok(Value::Object(out))
}

/// Ulimits by Docker's names.
fn rlimits(ulimits: &[shoal_proto::Ulimit]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for u in ulimits {
        let name = u.name.to_ascii_lowercase();
        if !shoal_proto::ULIMIT_NAMES.contains(&name.as_str()) {
            return Err(EngineError::InvalidArgument(format!(
                "unknown ulimit {:?}; known: {}",
                u.name,
                shoal_proto::ULIMIT_NAMES.join(", ")
            )));
        }
        if u.soft < 0 || u.hard < 0 || u.soft > u.hard {
            return Err(EngineError::InvalidArgument(format!(
                "ulimit {}: soft {} must be between 0 and hard {}",
                u.name, u.soft, u.hard
            )));
        }
        out.push(json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": u.soft, "hard": u.hard}));
    }
    // Without ulimits the container inherits the daemon's limits, as runc does when the spec
    // names none: raising a hard limit needs CAP_SYS_RESOURCE, which a daemon may lack.
    Ok(out)
}

/// Only namespaced sysctls may be set, as Docker allows.
fn sysctls(spec: &ContainerSpec) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in &spec.sysctls {
        let namespaced = k.starts_with("net.")
            || k.starts_with("kernel.shm")
            || k.starts_with("kernel.msg")
            || k == "kernel.sem"
            || k.starts_with("fs.mqueue.");
        if !namespaced || k.contains("..") || k.contains('/') {
            return Err(EngineError::InvalidArgument(format!(
                "sysctl {k:?} is not allowed: only namespaced ones (net.*, kernel.shm*, \
                 kernel.msg*, kernel.sem, fs.mqueue.*) can be set per container"
            )));
        }
        out.insert(k.clone(), json!(v));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Duration as PbDuration, Mount};

    fn input<'a>(
        spec: &'a ContainerSpec,
        limits: &'a Resources,
        image: &'a ImageConfig,
    ) -> SpecInput<'a> {
        SpecInput {
            id: "0123456789abcdef",
            spec,
            limits,
            cpu_shares: None,
            image,
            netns: None,
            cgroups_path: "/shoal/0123456789abcdef",
            files_dir: Path::new("/state/c1"),
            ncpu: 2,
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            working_dir: "/srv".into(),
            user: "app".into(),
            stop_signal: "SIGQUIT".into(),
            healthcheck: Some(HealthConfig {
                test: vec!["CMD".into(), "true".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn image_config_supplies_defaults() {
        let (spec, limits, img) = (ContainerSpec::default(), Resources::default(), image());
        let b = build(&input(&spec, &limits, &img)).unwrap();
        assert_eq!(b.args, vec!["/entry", "serve", "--port=80"]);
        assert_eq!(b.cwd, "/srv");
        assert_eq!(b.user, "app");
        assert_eq!(b.stop_signal, "SIGQUIT");
        assert_eq!(b.hostname, "0123456789ab");
        assert_eq!(
            b.env,
            vec!["PATH=/bin", "HOSTNAME=0123456789ab", "MODE=prod"]
        );
        assert_eq!(b.stop_grace, DEFAULT_STOP_GRACE);
        assert!(b.healthcheck.is_some());
    }

    #[test]
    fn container_spec_overrides_the_image() {
        let spec = ContainerSpec {
            args: vec!["debug".into()],
            env: vec!["MODE=dev".into()],
            dir: "/tmp".into(),
            user: "1000:1000".into(),
            hostname: "web".into(),
            stop_signal: "INT".into(),
            stop_grace_period: Some(PbDuration {
                seconds: 3,
                nanos: 0,
            }),
            healthcheck: Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (limits, img) = (Resources::default(), image());
        let b = build(&input(&spec, &limits, &img)).unwrap();
        // New args keep the image's entrypoint.
        assert_eq!(b.args, vec!["/entry", "debug"]);
        assert!(b.env.contains(&"MODE=dev".to_string()));
        assert!(!b.env.contains(&"MODE=prod".to_string()));
        assert_eq!((b.cwd.as_str(), b.hostname.as_str()), ("/tmp", "web"));
        assert_eq!(b.stop_grace, Duration::from_secs(3));
        assert!(b.healthcheck.is_none(), "NONE disables the image's check");
        let user = b.spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1000, 1000));
        // A new entrypoint drops the image's Cmd.
        let spec = ContainerSpec {
            command: vec!["/bin/sh".into()],
            ..Default::default()
        };
        let b = build(&input(&spec, &limits, &img)).unwrap();
        assert_eq!(b.args, vec!["/bin/sh"]);
    }

    #[test]
    fn spec_carries_isolation_defaults() {
        let (spec, img) = (ContainerSpec::default(), image());
        let limits = Resources {
            memory_bytes: 64 << 20,
            nano_cpus: 1_500_000_000,
            pids: 50,
        };
        let b = build(&input(&spec, &limits, &img)).unwrap();
        let json = serde_json::to_value(&b.spec).unwrap();
        let linux = &json["linux"];
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, vec!["pid", "ipc", "uts", "mount", "network"]);
        assert_eq!(linux["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(linux["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(linux["resources"]["pids"]["limit"], 50);
        assert!(
            linux["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&json!("/proc/kcore"))
        );
        assert_eq!(json["process"]["noNewPrivileges"], true);
        let eff: Vec<String> =
            serde_json::from_value(json["process"]["capabilities"]["effective"].clone()).unwrap();
        assert_eq!(caps::mask(&eff).unwrap(), 0xa80425fb);
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            &dests[..6],
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        assert!(dests.contains(&"/etc/hosts"));
        assert_eq!(json["root"]["readonly"], false);
    }

    #[test]
    fn user_mounts_are_checked() {
        let img = image();
        let limits = Resources::default();
        let mk = |t: mount::Type, src: &str, dst: &str| ContainerSpec {
            mounts: vec![Mount {
                r#type: t as i32,
                source: src.into(),
                target: dst.into(),
                read_only: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let ok = mk(mount::Type::Bind, "/data", "/mnt");
        let b = build(&input(&ok, &limits, &img)).unwrap();
        let json = serde_json::to_value(&b.spec).unwrap();
        let m = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/mnt")
            .unwrap();
        assert_eq!(m["options"], json!(["rbind", "rprivate", "ro"]));
        for (spec, needle) in [
            (mk(mount::Type::Bind, "rel", "/mnt"), "not an absolute path"),
            (mk(mount::Type::Bind, "/data", "/a/../etc"), "mount target"),
            (mk(mount::Type::Tmpfs, "", "/"), "mount target"),
            (mk(mount::Type::Volume, "v", "/v"), "not supported"),
        ] {
            let err = build(&input(&spec, &limits, &img)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn invalid_limits_and_values_are_refused_with_hints() {
        let (spec, img) = (ContainerSpec::default(), image());
        for (limits, needle) in [
            (
                Resources {
                    memory_bytes: 1024,
                    ..Default::default()
                },
                "minimum is 6MiB",
            ),
            (
                Resources {
                    memory_bytes: -5,
                    ..Default::default()
                },
                "negative",
            ),
            (
                Resources {
                    nano_cpus: 3_000_000_000,
                    ..Default::default()
                },
                "0.01 to 2.00",
            ),
            (
                Resources {
                    pids: -7,
                    ..Default::default()
                },
                "pids limit",
            ),
        ] {
            let err = build(&input(&spec, &limits, &img)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let limits = Resources::default();
        for (spec, needle) in [
            (
                ContainerSpec {
                    stop_signal: "SIGNOPE".into(),
                    ..Default::default()
                },
                "invalid signal",
            ),
            (
                ContainerSpec {
                    dir: "rel".into(),
                    ..Default::default()
                },
                "not absolute",
            ),
            (
                ContainerSpec {
                    env: vec!["NOEQUALS".into()],
                    ..Default::default()
                },
                "KEY=VALUE",
            ),
            (
                ContainerSpec {
                    hostname: "bad_host!".into(),
                    ..Default::default()
                },
                "hostname",
            ),
            (
                ContainerSpec {
                    capability_add: vec!["FLY".into()],
                    ..Default::default()
                },
                "capability",
            ),
        ] {
            let err = build(&input(&spec, &limits, &img)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let empty = ImageConfig::default();
        let err = build(&input(&ContainerSpec::default(), &limits, &empty))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no command"), "{err}");
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("99").is_err());
    }
}
