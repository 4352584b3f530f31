//! Validation of service specs: the API is the authority on what a valid service is, whatever
//! the client (the CLI checks the same things first, but stack files and other clients exist).
//!
//! Every refusal names the field (as the API spells it, with the CLI flag beside it) and says
//! how to fix it, and nothing is written unless the whole spec passes. What can only be known on
//! a node (does the image exist there? does a bind source exist?) is checked by the worker,
//! which fails the task with its own explanation.

use std::collections::HashSet;

use shoal_proto::{
    ContainerSpec, Duration, EndpointSpec, HealthConfig, Mount, Placement, ResourceRequirements,
    RestartPolicy, ServiceSpec, TaskSpec, UpdateConfig, endpoint_spec, mount, port_config,
    restart_policy, service_spec, update_config,
};
use tonic::Status;

use crate::scheduler::{parse_constraints, parse_spread};

/// Above this, a replica count is a mistake (often a negative number sent as unsigned).
pub const MAX_REPLICAS: u64 = 100_000;
/// The smallest memory limit a container can start with (as Docker, and the worker's engine).
pub const MIN_MEMORY_LIMIT: i64 = 6 << 20;
/// The smallest CPU limit the worker's engine accepts: 0.01 CPU.
pub const MIN_LIMIT_NANO_CPUS: i64 = 10_000_000;
/// The smallest CPU reservation: 0.001 CPU (as Docker).
pub const MIN_RESERVED_NANO_CPUS: i64 = 1_000_000;
/// The largest CPU amount: a million CPUs (as the CLI's bound), beyond which it is a mistake.
pub const MAX_NANO_CPUS: i64 = 1_000_000 * 1_000_000_000;
/// Service names follow Docker's rules: DNS-friendly, at most 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// A refused spec: which field, and what is wrong with it and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct SpecError {
    /// The field as the API spells it, with the CLI flag in parentheses, e.g.
    /// `spec.task.container.image (IMAGE)`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl From<SpecError> for Status {
    fn from(e: SpecError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

type Result<T = ()> = std::result::Result<T, SpecError>;

fn bad(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks a whole service spec as CreateService and UpdateService receive it. An empty name is
/// allowed here (CreateService generates one).
pub fn service_spec(spec: &ServiceSpec) -> Result {
    if let Some(a) = &spec.annotations {
        if !a.name.is_empty() {
            service_name(&a.name)?;
        }
        labels("spec.annotations.labels (--label)", a.labels.keys())?;
    }
    let task = spec.task.as_ref().ok_or_else(|| {
        bad(
            "spec.task",
            "missing; a service needs a task template with at least a container image",
        )
    })?;
    mode(spec.mode.as_ref(), task)?;
    task_spec(task)?;
    if let Some(u) = &spec.update {
        update_config("spec.update", "--update", u)?;
    }
    if let Some(r) = &spec.rollback {
        update_config("spec.rollback", "--rollback", r)?;
    }
    if let Some(e) = &spec.endpoint {
        endpoint(e)?;
    }
    Ok(())
}

/// Docker's service name rule: letters, digits, '-' and '_', starting and ending with a letter
/// or digit, at most 63 characters (it becomes a DNS name on overlay networks).
pub fn service_name(name: &str) -> Result {
    let field = "spec.annotations.name (--name)";
    if name.len() > MAX_NAME_LEN {
        return Err(bad(
            field,
            format!(
                "{name:?} is {} characters long; use at most {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let first_last_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !first_last_ok || !name.chars().all(ok_inner) {
        return Err(bad(
            field,
            format!(
                "{name:?} may contain only letters, digits, '-' and '_', and must start and end \
                 with a letter or digit, e.g. web or my_app-2"
            ),
        ));
    }
    Ok(())
}

fn labels<'a>(field: &str, keys: impl Iterator<Item = &'a String>) -> Result {
    for k in keys {
        if k.trim().is_empty() {
            return Err(bad(
                field,
                "a label has an empty key; write KEY=VALUE, e.g. team=web",
            ));
        }
    }
    Ok(())
}

fn mode(mode: Option<&service_spec::Mode>, task: &TaskSpec) -> Result {
    let max_per_node = task.placement.as_ref().map_or(0, |p| p.max_replicas);
    match mode {
        None => Err(bad(
            "spec.mode (--mode)",
            "missing; set replicated (with a replica count, e.g. --replicas 3) or global",
        )),
        Some(service_spec::Mode::Replicated(r)) if r.replicas > MAX_REPLICAS => Err(bad(
            "spec.mode.replicated.replicas (--replicas)",
            format!(
                "{} is more than the {MAX_REPLICAS} allowed (a negative number sent as unsigned?); \
                 give a count from 0 to {MAX_REPLICAS}",
                r.replicas
            ),
        )),
        Some(service_spec::Mode::Replicated(_)) => Ok(()),
        // The oneof makes "global with replicas" unrepresentable; the per-node maximum is the
        // one replica setting a global service could still carry.
        Some(service_spec::Mode::Global(_)) if max_per_node > 0 => Err(bad(
            "spec.task.placement.max_replicas (--replicas-max-per-node)",
            "cannot be used with a global service (it runs exactly one task per node); drop it \
             or use --mode replicated",
        )),
        Some(service_spec::Mode::Global(_)) => Ok(()),
    }
}

fn task_spec(task: &TaskSpec) -> Result {
    let c = task.container.as_ref().ok_or_else(|| {
        bad(
            "spec.task.container",
            "missing; a service needs a container with an image, e.g. busybox:latest",
        )
    })?;
    container(c)?;
    if let Some(r) = &task.resources {
        resources(r)?;
    }
    if let Some(r) = &task.restart {
        restart(r)?;
    }
    if let Some(p) = &task.placement {
        placement(p)?;
    }
    for (i, n) in task.networks.iter().enumerate() {
        if n.target.trim().is_empty() {
            return Err(bad(
                format!("spec.task.networks[{i}].target (--network)"),
                "empty; give a network name or ID",
            ));
        }
    }
    Ok(())
}

fn container(c: &ContainerSpec) -> Result {
    image("spec.task.container.image (IMAGE)", &c.image)?;
    labels(
        "spec.task.container.labels (--container-label)",
        c.labels.keys(),
    )?;
    for e in &c.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
            _ => {
                return Err(bad(
                    "spec.task.container.env (--env)",
                    format!("{e:?} is not KEY=VALUE; write e.g. -e MODE=production"),
                ));
            }
        }
    }
    if !c.dir.is_empty() && !c.dir.starts_with('/') {
        return Err(bad(
            "spec.task.container.dir (--workdir)",
            format!(
                "{:?} must be an absolute path in the container, e.g. /app",
                c.dir
            ),
        ));
    }
    if c.user.contains(char::is_whitespace) || c.user.starts_with(':') {
        return Err(bad(
            "spec.task.container.user (--user)",
            format!(
                "{:?} is not user[:group]; write e.g. nobody, 1000 or 1000:1000",
                c.user
            ),
        ));
    }
    if c.hostname.contains("{{") {
        return Err(bad(
            "spec.task.container.hostname (--hostname)",
            format!(
                "{:?}: templates such as {{{{.Node.Hostname}}}} are not supported yet; give a \
                 plain hostname, e.g. web-1",
                c.hostname
            ),
        ));
    }
    if !c.hostname.is_empty() && (c.hostname.len() > 64 || !is_hostname(&c.hostname)) {
        return Err(bad(
            "spec.task.container.hostname (--hostname)",
            format!(
                "{:?} is not a valid hostname; use letters, digits, '-' and '.', at most 64 \
                 characters, e.g. web-1",
                c.hostname
            ),
        ));
    }
    if !c.stop_signal.is_empty() && signal_number(&c.stop_signal).is_none() {
        return Err(bad(
            "spec.task.container.stop_signal (--stop-signal)",
            format!(
                "{:?} is not a signal; give a name or number, e.g. SIGTERM, TERM or 15",
                c.stop_signal
            ),
        ));
    }
    duration(
        "spec.task.container.stop_grace_period (--stop-grace-period)",
        c.stop_grace_period.as_ref(),
    )?;
    if let Some(h) = &c.healthcheck {
        healthcheck(h)?;
    }
    mounts(&c.mounts)?;
    networking(c)?;
    for k in c.sysctls.keys() {
        // Only sysctls the container's own namespaces hold can differ per container (as Docker).
        let namespaced = k.starts_with("net.")
            || k.starts_with("kernel.shm")
            || k.starts_with("kernel.msg")
            || k == "kernel.sem"
            || k.starts_with("fs.mqueue.");
        if !namespaced
            || k.contains("..")
            || k.contains(['/', '='])
            || k.contains(char::is_whitespace)
        {
            return Err(bad(
                "spec.task.container.sysctls (--sysctl)",
                format!(
                    "{k:?} cannot be set per container; only namespaced sysctls (net.*, \
                     kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) can, e.g. \
                     net.core.somaxconn=1024"
                ),
            ));
        }
    }
    for (flag, caps) in [("add", &c.capability_add), ("drop", &c.capability_drop)] {
        for cap in caps {
            let bare = cap.to_ascii_uppercase();
            let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
            if bare != "ALL"
                && (bare.is_empty() || !bare.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
            {
                return Err(bad(
                    format!("spec.task.container.capability_{flag} (--cap-{flag})"),
                    format!(
                        "{cap:?} is not a capability name; write e.g. NET_ADMIN or CAP_NET_ADMIN"
                    ),
                ));
            }
        }
    }
    for (i, u) in c.ulimits.iter().enumerate() {
        let field = format!("spec.task.container.ulimits[{i}] (--ulimit)");
        if !shoal_proto::ULIMIT_NAMES.contains(&u.name.to_ascii_lowercase().as_str()) {
            return Err(bad(
                field,
                format!(
                    "{:?} is not a ulimit; use one of {}, e.g. nofile=1024:2048",
                    u.name,
                    shoal_proto::ULIMIT_NAMES.join(", ")
                ),
            ));
        }
        if u.soft < 0 || u.hard < 0 || u.soft > u.hard {
            return Err(bad(
                field,
                format!(
                    "{}: soft {} and hard {} must be non-negative with soft <= hard, e.g. \
                     nofile=1024:2048",
                    u.name, u.soft, u.hard
                ),
            ));
        }
    }
    for (i, r) in c.secrets.iter().enumerate() {
        if r.secret_id.is_empty() && r.secret_name.is_empty() {
            return Err(bad(
                format!("spec.task.container.secrets[{i}] (--secret)"),
                "names no secret; give its name or ID, e.g. --secret db_password",
            ));
        }
    }
    for (i, r) in c.configs.iter().enumerate() {
        if r.config_id.is_empty() && r.config_name.is_empty() {
            return Err(bad(
                format!("spec.task.container.configs[{i}] (--config)"),
                "names no config; give its name or ID, e.g. --config nginx_conf",
            ));
        }
    }
    Ok(())
}

/// Extra /etc/hosts entries ("IP host [alias...]", as SwarmKit stores them, or Docker's
/// "host:IP") and DNS servers must carry real addresses.
fn networking(c: &ContainerSpec) -> Result {
    for (i, entry) in c.hosts.iter().enumerate() {
        let mut words = entry.split_whitespace();
        let ip_first = words
            .next()
            .is_some_and(|w| w.parse::<std::net::IpAddr>().is_ok())
            && words.next().is_some();
        let host_colon_ip = entry
            .split_once(':')
            .is_some_and(|(h, ip)| is_hostname(h) && ip.parse::<std::net::IpAddr>().is_ok());
        if !ip_first && !host_colon_ip {
            return Err(bad(
                format!("spec.task.container.hosts[{i}] (--host)"),
                format!("{entry:?} is not a hosts entry; write HOST:IP, e.g. db:10.0.0.5"),
            ));
        }
    }
    if let Some(dns) = &c.dns_config {
        for (i, ns) in dns.nameservers.iter().enumerate() {
            if ns.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(
                    format!("spec.task.container.dns_config.nameservers[{i}] (--dns)"),
                    format!("{ns:?} is not an IP address; write e.g. 1.1.1.1"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks an image reference as Docker's grammar has it, closely enough to catch typos:
/// `[host[:port]/]path[:tag][@algo:hex]`, with lowercase path components.
pub fn image(field: &str, reference: &str) -> Result {
    let example = "e.g. busybox:latest or registry.example.com:5000/team/app:1.2";
    if reference.trim().is_empty() {
        return Err(bad(
            field,
            format!("empty; give an image reference, {example}"),
        ));
    }
    if reference.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            field,
            format!("{reference:?} contains whitespace; give an image reference, {example}"),
        ));
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad(
                field,
                format!("{reference:?} has a malformed digest; write name@sha256:<64 hex digits>"),
            ));
        }
    }
    // A tag is after the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad(
                field,
                format!(
                    "{reference:?} has an invalid tag {tag:?}; a tag is letters, digits, '_', \
                     '.' and '-' (at most 128), {example}"
                ),
            ));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry host if it looks like one (has '.' or ':', or is
    // localhost): it may then hold uppercase letters and a port.
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        let host = components.remove(0);
        let (h, port) = host.split_once(':').unwrap_or((host, ""));
        let host_ok = is_hostname(h) && (port.is_empty() || port.parse::<u16>().is_ok());
        if !host_ok || (host.contains(':') && port.is_empty()) {
            return Err(bad(
                field,
                format!("{reference:?} has an invalid registry host {host:?}; {example}"),
            ));
        }
    }
    for comp in &components {
        if comp.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad(
                field,
                format!(
                    "{reference:?}: repository names must be lowercase; write {:?}",
                    reference.to_lowercase()
                ),
            ));
        }
        let ok = !comp.is_empty()
            && comp.starts_with(|c: char| c.is_ascii_alphanumeric())
            && comp.ends_with(|c: char| c.is_ascii_alphanumeric())
            && comp
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && separators_ok(comp);
        if !ok {
            return Err(bad(
                field,
                format!(
                    "{reference:?} is not a valid image reference (path component {comp:?}); \
                     {example}"
                ),
            ));
        }
    }
    Ok(())
}

/// Between alphanumeric runs of a path component, Docker allows one separator: `.`, `_`, `__`
/// or a run of `-`.
fn separators_ok(comp: &str) -> bool {
    comp.split(|c: char| c.is_ascii_alphanumeric())
        .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.chars().all(|c| c == '-'))
}

fn is_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A signal given by name (SIGTERM, TERM, case-insensitive) or number, as its number.
pub fn signal_number(s: &str) -> Option<i32> {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    if let Ok(n) = s.parse::<i32>() {
        // The standard signals only: the worker's runtime refuses real-time ones.
        return (1..=31).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as i32 + 1)
}

/// A duration must be non-negative with nanos below one second.
fn duration(field: &str, d: Option<&Duration>) -> Result {
    match d {
        Some(d) if d.seconds < 0 || d.nanos >= 1_000_000_000 => Err(bad(
            field,
            format!(
                "{}s{}ns is not a valid duration; give a non-negative one, e.g. 5s or 1m30s",
                d.seconds, d.nanos
            ),
        )),
        _ => Ok(()),
    }
}

fn nonzero_under_1ms(d: Option<&Duration>) -> bool {
    d.is_some_and(|d| {
        let std = d.to_std();
        !std.is_zero() && std < std::time::Duration::from_millis(1)
    })
}

fn healthcheck(h: &HealthConfig) -> Result {
    let field = "spec.task.container.healthcheck.test (--health-cmd)";
    match h.test.first().map(String::as_str) {
        None => {} // Keep the image's test, with the other settings overridden.
        Some("NONE") if h.test.len() == 1 => {}
        Some("NONE") => {
            return Err(bad(
                field,
                "[\"NONE\"] takes no arguments; use [\"NONE\"] alone",
            ));
        }
        Some("CMD") if h.test.len() >= 2 && !h.test[1].is_empty() => {}
        Some("CMD") => {
            return Err(bad(
                field,
                "[\"CMD\"] needs a program to run, e.g. [\"CMD\", \"/bin/check\", \"--quick\"]",
            ));
        }
        Some("CMD-SHELL") if h.test.len() == 2 && !h.test[1].trim().is_empty() => {}
        Some("CMD-SHELL") => {
            return Err(bad(
                field,
                "[\"CMD-SHELL\"] takes exactly one non-empty command, e.g. \
                 --health-cmd 'wget -q -O- localhost:8080/health'",
            ));
        }
        Some(other) => {
            return Err(bad(
                field,
                format!(
                    "starts with {other:?}; the first element is NONE, CMD or CMD-SHELL (the CLI's \
                     --health-cmd gives CMD-SHELL)"
                ),
            ));
        }
    }
    for (name, flag, d) in [
        ("interval", "--health-interval", h.interval.as_ref()),
        ("timeout", "--health-timeout", h.timeout.as_ref()),
        (
            "start_period",
            "--health-start-period",
            h.start_period.as_ref(),
        ),
    ] {
        let field = format!("spec.task.container.healthcheck.{name} ({flag})");
        duration(&field, d)?;
        if nonzero_under_1ms(d) {
            return Err(bad(
                field,
                "is under 1ms; give 0 for the default or at least 1ms, e.g. 30s",
            ));
        }
    }
    Ok(())
}

fn mounts(mounts: &[Mount]) -> Result {
    let mut targets = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("spec.task.container.mounts[{i}] (--mount)");
        let kind = mount::Type::try_from(m.r#type).map_err(|_| {
            bad(
                &field,
                format!("type {} is unknown; use bind or tmpfs", m.r#type),
            )
        })?;
        let clean = m.target.starts_with('/')
            && !m.target.split('/').any(|p| p == "..")
            && !m.target.trim_matches('/').is_empty();
        if !clean {
            return Err(bad(
                field,
                format!(
                    "target {:?} must be an absolute path in the container, without '..' and \
                     other than /, e.g. target=/data",
                    m.target
                ),
            ));
        }
        if !targets.insert(m.target.trim_end_matches('/')) {
            return Err(bad(
                field,
                format!(
                    "target {:?} is already used by another mount; give each mount its own target",
                    m.target
                ),
            ));
        }
        match kind {
            mount::Type::Bind if !m.source.starts_with('/') => {
                return Err(bad(
                    field,
                    format!(
                        "a bind mount needs an absolute source path on the node, not {:?}, e.g. \
                         source=/srv/data",
                        m.source
                    ),
                ));
            }
            mount::Type::Bind if m.tmpfs_size_bytes != 0 || m.tmpfs_mode != 0 => {
                return Err(bad(
                    field,
                    "tmpfs-size and tmpfs-mode apply only to type=tmpfs; drop them",
                ));
            }
            mount::Type::Bind => {}
            mount::Type::Volume => {
                return Err(bad(
                    field,
                    "volumes are not supported yet; use type=bind or type=tmpfs",
                ));
            }
            mount::Type::Tmpfs if !m.source.is_empty() => {
                return Err(bad(
                    field,
                    format!(
                        "a tmpfs mount takes no source (got {:?}); drop source=",
                        m.source
                    ),
                ));
            }
            mount::Type::Tmpfs if m.tmpfs_size_bytes < 0 => {
                return Err(bad(
                    field,
                    format!(
                        "tmpfs-size {} is negative; give a size, e.g. tmpfs-size=64m (0: unlimited)",
                        m.tmpfs_size_bytes
                    ),
                ));
            }
            mount::Type::Tmpfs if m.tmpfs_mode > 0o7777 => {
                return Err(bad(
                    field,
                    format!(
                        "tmpfs-mode {:o} is not a file mode; give octal up to 7777, e.g. \
                         tmpfs-mode=1777",
                        m.tmpfs_mode
                    ),
                ));
            }
            mount::Type::Tmpfs => {}
        }
    }
    Ok(())
}

fn resources(r: &ResourceRequirements) -> Result {
    let limits = r.limits.unwrap_or_default();
    let reservations = r.reservations.unwrap_or_default();
    for (what, flag, v, min) in [
        (
            "limits.nano_cpus",
            "--limit-cpu",
            limits.nano_cpus,
            MIN_LIMIT_NANO_CPUS,
        ),
        (
            "reservations.nano_cpus",
            "--reserve-cpu",
            reservations.nano_cpus,
            MIN_RESERVED_NANO_CPUS,
        ),
    ] {
        if v < 0 || (v > 0 && v < min) || v > MAX_NANO_CPUS {
            return Err(bad(
                format!("spec.task.resources.{what} ({flag})"),
                format!(
                    "{v} nano-CPUs ({} CPUs) is not valid; give from {} to 1000000 CPUs, e.g. \
                     {flag} 0.5",
                    v as f64 / 1e9,
                    min as f64 / 1e9
                ),
            ));
        }
    }
    for (what, flag, v) in [
        ("limits.memory_bytes", "--limit-memory", limits.memory_bytes),
        (
            "reservations.memory_bytes",
            "--reserve-memory",
            reservations.memory_bytes,
        ),
    ] {
        if v < 0 {
            return Err(bad(
                format!("spec.task.resources.{what} ({flag})"),
                format!("{v} bytes is negative; give a size, e.g. {flag} 512m"),
            ));
        }
    }
    if limits.memory_bytes > 0 && limits.memory_bytes < MIN_MEMORY_LIMIT {
        return Err(bad(
            "spec.task.resources.limits.memory_bytes (--limit-memory)",
            format!(
                "{} bytes is too little to start a container; give at least 6m",
                limits.memory_bytes
            ),
        ));
    }
    if limits.pids < 0 {
        return Err(bad(
            "spec.task.resources.limits.pids (--limit-pids)",
            format!(
                "{} is negative; give a positive number of processes (0: unlimited)",
                limits.pids
            ),
        ));
    }
    if reservations.pids != 0 {
        return Err(bad(
            "spec.task.resources.reservations.pids",
            "processes cannot be reserved, only limited; use --limit-pids",
        ));
    }
    if limits.nano_cpus > 0 && reservations.nano_cpus > limits.nano_cpus {
        return Err(bad(
            "spec.task.resources.reservations.nano_cpus (--reserve-cpu)",
            "is more than the CPU limit (--limit-cpu); reserve at most what the task may use",
        ));
    }
    if limits.memory_bytes > 0 && reservations.memory_bytes > limits.memory_bytes {
        return Err(bad(
            "spec.task.resources.reservations.memory_bytes (--reserve-memory)",
            "is more than the memory limit (--limit-memory); reserve at most what the task may \
             use",
        ));
    }
    Ok(())
}

fn restart(r: &RestartPolicy) -> Result {
    if restart_policy::Condition::try_from(r.condition).is_err() {
        return Err(bad(
            "spec.task.restart.condition (--restart-condition)",
            format!(
                "{} is not a restart condition; use none, on-failure or any",
                r.condition
            ),
        ));
    }
    duration(
        "spec.task.restart.delay (--restart-delay)",
        r.delay.as_ref(),
    )?;
    duration(
        "spec.task.restart.window (--restart-window)",
        r.window.as_ref(),
    )?;
    Ok(())
}

fn placement(p: &Placement) -> Result {
    parse_constraints(&p.constraints).map_err(|e| {
        bad(
            "spec.task.placement.constraints (--constraint)",
            e.to_string(),
        )
    })?;
    for (i, pref) in p.preferences.iter().enumerate() {
        let field = format!("spec.task.placement.preferences[{i}].spread (--placement-pref)");
        if pref.spread.trim().is_empty() {
            return Err(bad(
                field,
                "empty; give a descriptor to spread over, e.g. spread=node.labels.zone",
            ));
        }
        parse_spread(&pref.spread).map_err(|e| bad(field, e.to_string()))?;
    }
    for (i, pl) in p.platforms.iter().enumerate() {
        if pl.os.is_empty() && pl.architecture.is_empty() {
            return Err(bad(
                format!("spec.task.placement.platforms[{i}]"),
                "empty; give an os and/or architecture, e.g. linux/amd64",
            ));
        }
    }
    Ok(())
}

fn update_config(prefix: &str, flag: &str, u: &UpdateConfig) -> Result {
    duration(&format!("{prefix}.delay ({flag}-delay)"), u.delay.as_ref())?;
    duration(
        &format!("{prefix}.monitor ({flag}-monitor)"),
        u.monitor.as_ref(),
    )?;
    if update_config::FailureAction::try_from(u.failure_action).is_err() {
        return Err(bad(
            format!("{prefix}.failure_action ({flag}-failure-action)"),
            "unknown; use pause, continue or rollback",
        ));
    }
    if update_config::Order::try_from(u.order).is_err() {
        return Err(bad(
            format!("{prefix}.order ({flag}-order)"),
            "unknown; use stop-first or start-first",
        ));
    }
    if !(0.0..=1.0).contains(&u.max_failure_ratio) {
        return Err(bad(
            format!("{prefix}.max_failure_ratio ({flag}-max-failure-ratio)"),
            format!(
                "{} is not a ratio; give a number from 0 to 1, e.g. 0.2",
                u.max_failure_ratio
            ),
        ));
    }
    Ok(())
}

fn endpoint(e: &EndpointSpec) -> Result {
    if endpoint_spec::ResolutionMode::try_from(e.mode).is_err() {
        return Err(bad(
            "spec.endpoint.mode (--endpoint-mode)",
            "unknown; use vip or dnsrr",
        ));
    }
    let mut published = HashSet::new();
    for (i, p) in e.ports.iter().enumerate() {
        let field = format!("spec.endpoint.ports[{i}] (--publish)");
        let protocol = port_config::Protocol::try_from(p.protocol)
            .map_err(|_| bad(&field, "unknown protocol; use tcp, udp or sctp"))?;
        if port_config::PublishMode::try_from(p.publish_mode).is_err() {
            return Err(bad(&field, "unknown publish mode; use ingress or host"));
        }
        if p.target_port == 0 || p.target_port > 65535 {
            return Err(bad(
                field,
                format!(
                    "target port {} is not a port; give 1-65535, e.g. published=8080,target=80",
                    p.target_port
                ),
            ));
        }
        if p.published_port > 65535 {
            return Err(bad(
                field,
                format!(
                    "published port {} is not a port; give 1-65535 (or 0 to have one chosen)",
                    p.published_port
                ),
            ));
        }
        if p.published_port != 0 && !published.insert((p.published_port, protocol as i32)) {
            return Err(bad(
                field,
                format!(
                    "published port {} is given twice; publish each port once",
                    p.published_port
                ),
            ));
        }
    }
    Ok(())
}

/// Whether switching a service from `old` to `new` is allowed in place: the mode cannot change
/// (Swarm refuses it too: remove and re-create the service).
pub fn mode_change(old: &ServiceSpec, new: &ServiceSpec) -> Result {
    let global = |s: &ServiceSpec| matches!(s.mode, Some(service_spec::Mode::Global(_)));
    if global(old) != global(new) {
        let (from, to) = if global(old) {
            ("global", "replicated")
        } else {
            ("replicated", "global")
        };
        return Err(bad(
            "spec.mode (--mode)",
            format!(
                "a {from} service cannot become {to}; remove it and create it again with the new \
                 mode"
            ),
        ));
    }
    Ok(())
}
