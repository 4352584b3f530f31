//! Health checks as Docker runs them: a probe command inside the container every `interval`,
//! killed after `timeout`; `retries` failures in a row make the container unhealthy, except
//! failures within `start_period` (boot time) while it never was healthy.
//!
//! The executor acts on the verdicts (SwarmKit's): a task is RUNNING once its first probe
//! passed, and FAILED ("unhealthy: <last output>") and stopped once it turns unhealthy, so
//! the orchestrator replaces it.

use std::time::Duration;

use shoal_proto::HealthConfig;
use tokio::time::Instant;
use tracing::debug;

use crate::engine::{Engine, ExecOptions};

/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;
/// Docker keeps at most this much of a probe's output.
const OUTPUT_LIMIT: usize = 4096;

/// A change of health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// With the last probe's output (or why it could not run).
    Unhealthy(String),
}

/// One container's health check and where it stands.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// The probe's argv; None: no check.
    cmd: Option<Vec<String>>,
    interval: Duration,
    timeout: Duration,
    retries: u32,
    start_period: Duration,
    since: Instant,
    failures: u32,
    healthy: bool,
}

fn or_default(d: &Option<shoal_proto::Duration>, default: Duration) -> Duration {
    d.as_ref()
        .map(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

impl HealthCheck {
    /// From the task's (else the image's) HealthConfig; `test` NONE or empty disables it.
    pub fn new(config: Option<HealthConfig>) -> HealthCheck {
        let config = config.unwrap_or_default();
        let cmd = match config.test.first().map(String::as_str) {
            Some("CMD") if config.test.len() > 1 => Some(config.test[1..].to_vec()),
            Some("CMD-SHELL") if config.test.len() > 1 => Some(vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                config.test[1..].join(" "),
            ]),
            _ => None,
        };
        HealthCheck {
            cmd,
            interval: or_default(&config.interval, DEFAULT_INTERVAL),
            timeout: or_default(&config.timeout, DEFAULT_TIMEOUT),
            retries: if config.retries == 0 {
                DEFAULT_RETRIES
            } else {
                config.retries
            },
            start_period: config
                .start_period
                .as_ref()
                .map(|d| d.to_std())
                .unwrap_or_default(),
            since: Instant::now(),
            failures: 0,
            healthy: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cmd.is_some()
    }

    /// Probes every interval until health changes: the first pass (Healthy) or `retries`
    /// counted failures in a row (Unhealthy). Never resolves when disabled.
    pub async fn until_verdict<E: Engine>(&mut self, engine: &E, container: &str) -> Verdict {
        let Some(cmd) = self.cmd.clone() else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(self.interval).await;
            let options = ExecOptions {
                cmd: cmd.clone(),
                timeout: Some(self.timeout),
                ..Default::default()
            };
            let (passed, output) = match engine.exec(container, options).await {
                Ok(out) if out.timed_out => (
                    false,
                    format!(
                        "Health check exceeded timeout ({}s)",
                        self.timeout.as_secs_f64()
                    ),
                ),
                Ok(out) => {
                    let mut text = out.stdout;
                    text.extend_from_slice(&out.stderr);
                    text.truncate(OUTPUT_LIMIT);
                    let text = String::from_utf8_lossy(&text).trim().to_string();
                    let text = if text.is_empty() {
                        format!("exit code {}", out.exit_code)
                    } else {
                        text
                    };
                    (out.exit_code == 0, text)
                }
                Err(e) => (false, format!("health check could not run: {e}")),
            };
            debug!(%container, passed, %output, "health probe");
            if passed {
                self.failures = 0;
                if !self.healthy {
                    self.healthy = true;
                    return Verdict::Healthy;
                }
                continue;
            }
            // Failures while booting do not count, until the first pass.
            if !self.healthy && self.since.elapsed() < self.start_period {
                continue;
            }
            self.failures += 1;
            if self.failures >= self.retries {
                self.healthy = false;
                return Verdict::Unhealthy(output);
            }
        }
    }
}
