//! `service create` flags -> ServiceSpec, as `docker service create` reads them. Every bad value
//! is refused here with the flag's name and a valid example, before anything reaches a manager.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use shoal_proto::{
    Annotations, ContainerSpec, GlobalService, HealthConfig, Mount, Placement, PlacementPreference,
    ReplicatedService, ResourceRequirements, Resources, RestartPolicy, ServiceSpec, TaskSpec,
    mount, restart_policy, service_spec,
};

use crate::cli::container::parse_bytes;
use crate::cli::units::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Replicated,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

fn duration(flag: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| parse_duration(flag, s)
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name (generated when omitted).
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks (replicated mode; default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<u64>,
    /// replicated (N tasks) or global (one task per node).
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: Mode,
    /// Environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// user[:group], by name or number.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Placement constraint, e.g. node.labels.zone==a or node.role!=manager.
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraints: Vec<String>,
    /// Spread tasks over a node label's values: spread=node.labels.KEY.
    #[arg(long = "placement-pref", value_name = "spread=DESCRIPTOR")]
    pub placement_prefs: Vec<String>,
    /// At most this many tasks of the service on one node (0: no limit).
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// CPUs reserved per task (e.g. 0.5).
    #[arg(long, allow_negative_numbers = true)]
    pub reserve_cpu: Option<f64>,
    /// Memory reserved per task (e.g. 512m).
    #[arg(long)]
    pub reserve_memory: Option<String>,
    /// CPU limit per task (e.g. 1.5).
    #[arg(long, allow_negative_numbers = true)]
    pub limit_cpu: Option<f64>,
    /// Memory limit per task (e.g. 1g).
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Process limit per task.
    #[arg(long, allow_negative_numbers = true)]
    pub limit_pids: Option<i64>,
    /// When to restart a task that ended: none, on-failure, any (default any).
    #[arg(long, value_enum)]
    pub restart_condition: Option<RestartCondition>,
    /// Wait between restarts (default 5s).
    #[arg(long, value_parser = duration("--restart-delay"))]
    pub restart_delay: Option<Duration>,
    /// Restarts before giving up (default 0: unlimited).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restarts count against the maximum (default: unbounded).
    #[arg(long, value_parser = duration("--restart-window"))]
    pub restart_window: Option<Duration>,
    /// type=bind|tmpfs,source=...,target=...[,readonly][,tmpfs-size=64m][,tmpfs-mode=1777]
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Command to run to check health (through /bin/sh -c).
    #[arg(long)]
    pub health_cmd: Option<String>,
    #[arg(long, value_parser = duration("--health-interval"))]
    pub health_interval: Option<Duration>,
    #[arg(long, value_parser = duration("--health-timeout"))]
    pub health_timeout: Option<Duration>,
    #[arg(long)]
    pub health_retries: Option<u32>,
    #[arg(long, value_parser = duration("--health-start-period"))]
    pub health_start_period: Option<Duration>,
    /// Disable the image's health check.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Signal that stops a task (default: the image's, else SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Wait after the stop signal before SIGKILL (default 10s).
    #[arg(long, value_parser = duration("--stop-grace-period"))]
    pub stop_grace_period: Option<Duration>,
    /// Service label KEY=VALUE.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Return once the service is created, without waiting for its tasks.
    #[arg(short, long)]
    pub detach: bool,
    /// The image to run (imported with `shoal image import` on the nodes).
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn key_value(flag: &str, kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {kv:?}: expected KEY=VALUE"),
    }
}

fn cpus(flag: &str, value: Option<f64>) -> Result<i64> {
    match value {
        None => Ok(0),
        Some(c) if c > 0.0 && c.is_finite() && c < 1e6 => Ok((c * 1e9).round() as i64),
        Some(c) => bail!("{flag} {c}: give a positive number of CPUs, e.g. 0.5 or 2"),
    }
}

fn memory(flag: &str, value: &Option<String>) -> Result<i64> {
    match value {
        None => Ok(0),
        Some(m) => parse_bytes(m).map_err(|e| anyhow::anyhow!("{flag}: {e:#}")),
    }
}

/// Parses `--mount type=bind,source=/a,target=/b,readonly`.
pub fn parse_mount(spec: &str) -> Result<Mount> {
    let mut m = Mount::default();
    let mut kind = None;
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "type" => {
                kind = Some(match v {
                    "bind" => mount::Type::Bind,
                    "tmpfs" => mount::Type::Tmpfs,
                    "volume" => bail!(
                        "--mount {spec:?}: volumes are not supported yet; use type=bind or type=tmpfs"
                    ),
                    _ => bail!("--mount {spec:?}: type must be bind or tmpfs"),
                })
            }
            "source" | "src" => m.source = v.to_string(),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => m.read_only = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => {
                m.tmpfs_size_bytes =
                    parse_bytes(v).map_err(|e| anyhow::anyhow!("--mount {spec:?}: {e:#}"))?
            }
            "tmpfs-mode" => {
                m.tmpfs_mode = u32::from_str_radix(v, 8).map_err(|_| {
                    anyhow::anyhow!("--mount {spec:?}: tmpfs-mode must be octal, e.g. 1777")
                })?
            }
            _ => bail!(
                "--mount {spec:?}: unknown option {k:?}; use type, source, target, readonly, \
                 tmpfs-size, tmpfs-mode"
            ),
        }
    }
    let kind = kind.ok_or_else(|| {
        anyhow::anyhow!(
            "--mount {spec:?}: type is required, e.g. type=bind,source=/srv,target=/data"
        )
    })?;
    m.r#type = kind as i32;
    if !m.target.starts_with('/') {
        bail!(
            "--mount {spec:?}: target must be an absolute path in the container, e.g. target=/data"
        );
    }
    if kind == mount::Type::Bind && !m.source.starts_with('/') {
        bail!(
            "--mount {spec:?}: a bind mount needs an absolute source path on the node, e.g. source=/srv/data"
        );
    }
    Ok(m)
}

impl CreateArgs {
    /// The spec this command asks for.
    pub fn to_spec(&self) -> Result<ServiceSpec> {
        if self.image.trim().is_empty() {
            bail!("the image name is empty; give one, e.g. busybox:latest");
        }
        let mode = match (self.mode, self.replicas) {
            (Mode::Global, Some(_)) => {
                bail!(
                    "--replicas cannot be used with --mode global (a global service runs one task per node)"
                )
            }
            (Mode::Global, None) => service_spec::Mode::Global(GlobalService {}),
            (Mode::Replicated, r) => service_spec::Mode::Replicated(ReplicatedService {
                replicas: r.unwrap_or(1),
            }),
        };
        let labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|kv| key_value("--label", kv))
            .collect::<Result<_>>()?;
        for e in &self.env {
            key_value("--env", e)?;
        }
        let preferences = self
            .placement_prefs
            .iter()
            .map(|p| match p.split_once('=') {
                Some(("spread", d)) if !d.is_empty() => Ok(PlacementPreference {
                    spread: d.to_string(),
                }),
                _ => bail!("--placement-pref {p:?}: expected spread=DESCRIPTOR, e.g. spread=node.labels.zone"),
            })
            .collect::<Result<Vec<_>>>()?;
        let healthcheck = if self.no_healthcheck {
            Some(HealthConfig {
                test: vec!["NONE".into()],
                ..Default::default()
            })
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
        {
            Some(HealthConfig {
                test: self
                    .health_cmd
                    .as_ref()
                    .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                    .unwrap_or_default(),
                interval: self.health_interval.map(Into::into),
                timeout: self.health_timeout.map(Into::into),
                retries: self.health_retries.unwrap_or(0),
                start_period: self.health_start_period.map(Into::into),
            })
        } else {
            None
        };
        let restart = RestartPolicy {
            condition: match self.restart_condition.unwrap_or(RestartCondition::Any) {
                RestartCondition::Any => restart_policy::Condition::Any,
                RestartCondition::None => restart_policy::Condition::None,
                RestartCondition::OnFailure => restart_policy::Condition::OnFailure,
            } as i32,
            delay: self.restart_delay.map(Into::into),
            max_attempts: self.restart_max_attempts.unwrap_or(0),
            window: self.restart_window.map(Into::into),
        };
        Ok(ServiceSpec {
            annotations: Some(Annotations {
                name: self.name.clone().unwrap_or_default(),
                labels,
            }),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: self.image.trim().to_string(),
                    args: self.command.clone(),
                    env: self.env.clone(),
                    dir: self.workdir.clone().unwrap_or_default(),
                    user: self.user.clone().unwrap_or_default(),
                    hostname: self.hostname.clone().unwrap_or_default(),
                    mounts: self
                        .mounts
                        .iter()
                        .map(|m| parse_mount(m))
                        .collect::<Result<_>>()?,
                    stop_signal: self.stop_signal.clone().unwrap_or_default(),
                    stop_grace_period: self.stop_grace_period.map(Into::into),
                    healthcheck,
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: cpus("--limit-cpu", self.limit_cpu)?,
                        memory_bytes: memory("--limit-memory", &self.limit_memory)?,
                        pids: match self.limit_pids {
                            Some(p) if p <= 0 => {
                                bail!("--limit-pids {p}: give a positive number of processes")
                            }
                            p => p.unwrap_or(0),
                        },
                    }),
                    reservations: Some(Resources {
                        nano_cpus: cpus("--reserve-cpu", self.reserve_cpu)?,
                        memory_bytes: memory("--reserve-memory", &self.reserve_memory)?,
                        pids: 0,
                    }),
                }),
                restart: Some(restart),
                placement: Some(Placement {
                    constraints: self.constraints.clone(),
                    preferences,
                    max_replicas: self.replicas_max_per_node.unwrap_or(0),
                    platforms: Vec::new(),
                }),
                ..Default::default()
            }),
            mode: Some(mode),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn spec(args: &[&str]) -> Result<ServiceSpec> {
        let mut full = vec!["shoal"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .args
            .to_spec()
    }

    #[test]
    fn flags_become_the_spec() {
        let s = spec(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "-e",
            "A=1",
            "--constraint",
            "node.labels.zone==a",
            "--placement-pref",
            "spread=node.labels.rack",
            "--reserve-memory",
            "64m",
            "--limit-cpu",
            "0.5",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "2s",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "--health-cmd",
            "true",
            "--label",
            "team=x",
            "busybox:latest",
            "sh",
            "-c",
            "sleep 1000",
        ])
        .unwrap();
        assert_eq!(s.annotations.as_ref().unwrap().name, "web");
        assert!(matches!(
            s.mode,
            Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 3
            }))
        ));
        let task = s.task.unwrap();
        let c = task.container.unwrap();
        assert_eq!(c.args, ["sh", "-c", "sleep 1000"]);
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.mounts[0].tmpfs_size_bytes, 1 << 20);
        assert_eq!(c.healthcheck.unwrap().test, ["CMD-SHELL", "true"]);
        let r = task.resources.unwrap();
        assert_eq!(r.reservations.unwrap().memory_bytes, 64 << 20);
        assert_eq!(r.limits.unwrap().nano_cpus, 500_000_000);
        assert_eq!(
            task.restart.unwrap().condition,
            restart_policy::Condition::OnFailure as i32
        );
        assert_eq!(
            task.placement.unwrap().preferences[0].spread,
            "node.labels.rack"
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = |a: &[&str]| spec(a).unwrap_err().to_string();
        assert!(err(&["--mode", "global", "--replicas", "2", "img"]).contains("--replicas"));
        assert!(err(&["--restart-delay", "5", "img"]).contains("--restart-delay"));
        assert!(err(&["--limit-cpu", "-1", "img"]).contains("--limit-cpu"));
        assert!(err(&["--reserve-memory", "lots", "img"]).contains("--reserve-memory"));
        assert!(err(&["--mount", "type=bind,target=/x", "img"]).contains("absolute source"));
        assert!(err(&["--mount", "source=/a,target=/b", "img"]).contains("type is required"));
        assert!(err(&["--placement-pref", "pack=x", "img"]).contains("spread="));
        assert!(err(&["--label", "=x", "img"]).contains("KEY=VALUE"));
        assert!(err(&["--replicas", "-3", "img"]).contains("replicas"));
    }
}
