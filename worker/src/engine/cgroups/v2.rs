//! cgroup v2: one tree; controllers must be enabled in every ancestor's subtree_control before
//! a leaf can use them, and limits go to `memory.max`, `cpu.max`, `cpu.weight`, `pids.max`.

use std::path::{Path, PathBuf};

use super::{Cgroup, Limits, oom_kill_count, read_procs, remove_dir, write_file};
use crate::engine::error::{EngineError, Result};

/// Controllers the engine configures.
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

pub struct V2Cgroup {
    root: PathBuf,
    rel: String,
}

impl V2Cgroup {
    /// `root` is the cgroup2 mount (normally /sys/fs/cgroup); tests pass a temp dir.
    pub fn new(root: &Path, rel: &str) -> V2Cgroup {
        V2Cgroup {
            root: root.to_path_buf(),
            rel: rel.trim_matches('/').to_string(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// Enables our controllers from the root down to the leaf's parent.
    fn enable_controllers(&self, limits: &Limits) -> Result<()> {
        let available =
            std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        for (needed, name, flag) in [
            (limits.memory.is_some(), "memory", "--memory"),
            (
                limits.cpu_quota.is_some() || limits.cpu_shares.is_some(),
                "cpu",
                "--cpus",
            ),
            (limits.pids.is_some(), "pids", "--pids-limit"),
        ] {
            if needed && !available.contains(&name) {
                return Err(EngineError::Host(format!(
                    "the {name} cgroup controller is not available on this host (not in {}); \
                     {flag} needs it",
                    self.root.join("cgroup.controllers").display()
                )));
            }
        }
        let enable: Vec<String> = WANTED
            .iter()
            .filter(|c| available.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        let mut dir = self.root.clone();
        let parts: Vec<&str> = self.rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if !enable.is_empty() {
                write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
            }
            dir.push(part);
            if i + 1 < parts.len() {
                create_dir(&dir)?;
            }
        }
        Ok(())
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(EngineError::Host(format!(
            "cannot create cgroup {}: {e}",
            dir.display()
        ))),
    }
}

/// cgroup v1 shares (2..262144) to v2 weight (1..10000), as runc converts them.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl Cgroup for V2Cgroup {
    fn create(&self, limits: &Limits) -> Result<()> {
        self.enable_controllers(limits)?;
        let dir = self.dir();
        create_dir(&dir)?;
        if let Some(mem) = limits.memory {
            write_file(&dir.join("memory.max"), &mem.to_string())?;
            // No swap on top of the limit, so a memory hog meets the OOM killer.
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
            let period = limits.cpu_period.unwrap_or(100_000);
            let quota = limits
                .cpu_quota
                .map_or_else(|| "max".to_string(), |q| q.to_string());
            write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(shares) = limits.cpu_shares {
            write_file(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some(pids) = limits.pids {
            let v = if pids <= 0 {
                "max".to_string()
            } else {
                pids.to_string()
            };
            write_file(&dir.join("pids.max"), &v)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir().join("cgroup.procs"), &pid.to_string())
    }

    fn oom_killed(&self) -> bool {
        let events = std::fs::read_to_string(self.dir().join("memory.events")).unwrap_or_default();
        oom_kill_count(&events) > 0
    }

    fn procs(&self) -> Vec<i32> {
        read_procs(&self.dir().join("cgroup.procs"))
    }

    fn destroy(&self) -> Result<()> {
        remove_dir(&self.dir())
    }

    fn describe(&self) -> String {
        self.dir().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-cg2-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        d
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn writes_limits_and_enables_controllers_down_the_tree() {
        let root = fake_root("limits");
        let cg = V2Cgroup::new(&root, "shoal/c1");
        // A real cgroupfs makes memory.swap.max on mkdir; the fake needs it made by hand.
        std::fs::create_dir_all(root.join("shoal/c1")).unwrap();
        std::fs::write(root.join("shoal/c1/memory.swap.max"), "max").unwrap();
        cg.create(&Limits {
            memory: Some(64 << 20),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(1024),
            pids: Some(20),
        })
        .unwrap();
        assert_eq!(
            read(root.join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(root.join("shoal/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert!(!root.join("shoal/c1/cgroup.subtree_control").exists());
        assert_eq!(read(root.join("shoal/c1/memory.max")), "67108864");
        assert_eq!(read(root.join("shoal/c1/memory.swap.max")), "0");
        assert_eq!(read(root.join("shoal/c1/cpu.max")), "50000 100000");
        assert_eq!(read(root.join("shoal/c1/cpu.weight")), "39");
        assert_eq!(read(root.join("shoal/c1/pids.max")), "20");
        cg.add_process(4242).unwrap();
        assert_eq!(read(root.join("shoal/c1/cgroup.procs")), "4242");
        std::fs::write(root.join("shoal/c1/memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(cg.oom_killed());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_limits_writes_no_limit_files_and_missing_controllers_are_named() {
        let root = fake_root("none");
        let cg = V2Cgroup::new(&root, "shoal/c2");
        cg.create(&Limits::default()).unwrap();
        assert!(!root.join("shoal/c2/memory.max").exists());
        assert!(!root.join("shoal/c2/pids.max").exists());
        std::fs::write(root.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let err = V2Cgroup::new(&root, "shoal/c3")
            .create(&Limits {
                pids: Some(5),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pids cgroup controller") && err.contains("--pids-limit"),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
