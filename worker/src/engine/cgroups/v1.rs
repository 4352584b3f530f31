//! cgroup v1 (and the hybrid layout, whose controllers are all v1): one hierarchy per
//! controller, found in /proc/self/mountinfo (cpu and cpuacct may share a mount or not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Cgroup, Limits, oom_kill_count, read_procs, remove_dir, write_file};
use crate::engine::error::{EngineError, Result};

/// Controllers a container joins; cpuacct only for accounting.
const JOINED: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

pub struct V1Cgroup {
    /// Controller name -> mount point of its hierarchy.
    mounts: BTreeMap<String, PathBuf>,
    rel: String,
}

/// Parses mountinfo for cgroup (v1) mounts: controller -> mount point.
pub fn mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let Some(mount_point) = pre.split_whitespace().nth(4) else {
            continue;
        };
        let options = post.nth(1).unwrap_or("");
        for opt in options.split(',') {
            if JOINED.contains(&opt) {
                out.insert(opt.to_string(), PathBuf::from(mount_point));
            }
        }
    }
    out
}

impl V1Cgroup {
    pub fn new(mounts: BTreeMap<String, PathBuf>, rel: &str) -> V1Cgroup {
        V1Cgroup {
            mounts,
            rel: rel.trim_matches('/').to_string(),
        }
    }

    /// The cgroup's directory in each joined hierarchy (shared mounts counted once).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.mounts.values().map(|m| m.join(&self.rel)).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn dir_of(&self, controller: &str, flag: &str) -> Result<PathBuf> {
        self.mounts
            .get(controller)
            .map(|m| m.join(&self.rel))
            .ok_or_else(|| {
                EngineError::Host(format!(
                    "the {controller} cgroup controller is not mounted on this host (see \
                     /proc/self/mountinfo); {flag} needs it"
                ))
            })
    }
}

fn set_if_present(path: &Path, value: &str) -> Result<()> {
    if path.exists() {
        write_file(path, value)?;
    }
    Ok(())
}

impl Cgroup for V1Cgroup {
    fn create(&self, limits: &Limits) -> Result<()> {
        // Check first, so a missing controller creates nothing.
        if limits.memory.is_some() {
            self.dir_of("memory", "--memory")?;
        }
        if limits.cpu_quota.is_some() || limits.cpu_shares.is_some() {
            self.dir_of("cpu", "--cpus")?;
        }
        if limits.pids.is_some() {
            self.dir_of("pids", "--pids-limit")?;
        }
        for dir in self.dirs() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                EngineError::Host(format!("cannot create cgroup {}: {e}", dir.display()))
            })?;
        }
        if let Some(mem) = limits.memory {
            let dir = self.dir_of("memory", "--memory")?;
            write_file(&dir.join("memory.limit_in_bytes"), &mem.to_string())?;
            // memsw (memory + swap) equal to the limit: no swap on top of it.
            set_if_present(&dir.join("memory.memsw.limit_in_bytes"), &mem.to_string())?;
        }
        if limits.cpu_quota.is_some() || limits.cpu_shares.is_some() {
            let dir = self.dir_of("cpu", "--cpus")?;
            if let Some(period) = limits.cpu_period {
                write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = limits.cpu_quota {
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            if let Some(shares) = limits.cpu_shares {
                write_file(&dir.join("cpu.shares"), &shares.to_string())?;
            }
        }
        if let Some(pids) = limits.pids {
            let dir = self.dir_of("pids", "--pids-limit")?;
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
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        let Some(m) = self.mounts.get("memory") else {
            return false;
        };
        let text = std::fs::read_to_string(m.join(&self.rel).join("memory.oom_control"))
            .unwrap_or_default();
        oom_kill_count(&text) > 0
    }

    fn procs(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .dirs()
            .iter()
            .flat_map(|d| read_procs(&d.join("cgroup.procs")))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.dirs() {
            if let Err(e) = remove_dir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn describe(&self) -> String {
        self.mounts
            .get("memory")
            .or_else(|| self.mounts.values().next())
            .map(|m| m.join(&self.rel).display().to_string())
            .unwrap_or_else(|| self.rel.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_controller_mounts_in_mountinfo() {
        let m = mounts(HYBRID);
        assert_eq!(m["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpuacct"));
        assert_eq!(m.len(), 4);
        let shared = mounts("1 2 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
        assert_eq!(shared["cpu"], shared["cpuacct"]);
    }

    #[test]
    fn writes_v1_files_into_each_hierarchy() {
        let base = std::env::temp_dir().join(format!("shoal-cg1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut m = BTreeMap::new();
        for c in ["memory", "cpu", "pids"] {
            m.insert(c.to_string(), base.join(c));
        }
        let cg = V1Cgroup::new(m, "shoal/c1");
        std::fs::create_dir_all(base.join("memory/shoal/c1")).unwrap();
        std::fs::write(base.join("memory/shoal/c1/memory.memsw.limit_in_bytes"), "").unwrap();
        cg.create(&Limits {
            memory: Some(32 << 20),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            cpu_shares: None,
            pids: Some(10),
        })
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(base.join(p)).unwrap();
        assert_eq!(read("memory/shoal/c1/memory.limit_in_bytes"), "33554432");
        assert_eq!(
            read("memory/shoal/c1/memory.memsw.limit_in_bytes"),
            "33554432"
        );
        assert_eq!(read("cpu/shoal/c1/cpu.cfs_quota_us"), "150000");
        assert_eq!(read("cpu/shoal/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids/shoal/c1/pids.max"), "10");
        cg.add_process(7).unwrap();
        assert_eq!(read("pids/shoal/c1/cgroup.procs"), "7");
        std::fs::write(
            base.join("memory/shoal/c1/memory.oom_control"),
            "oom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
