//! Facts about the host the engine runs on: kernel, cgroup layout, CPU and memory capacity.
//! Read once at start-up for `shoal info` and the node description a worker reports.

use std::path::Path;

/// How cgroups are mounted on this host; the engine drives v1 and v2 differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// One unified cgroup2 hierarchy at /sys/fs/cgroup.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount at /sys/fs/cgroup/unified (systemd's
    /// "hybrid" layout); controllers live in v1.
    Hybrid,
    /// v1 controller hierarchies only.
    V1,
}

impl CgroupMode {
    /// The name `shoal info` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::V1 => "v1",
        }
    }

    /// Detects the layout under `root` (normally /sys/fs/cgroup).
    pub fn detect(root: &Path) -> CgroupMode {
        // cgroup2 exposes cgroup.controllers at its root; v1 hierarchies never do.
        if root.join("cgroup.controllers").exists() {
            CgroupMode::V2
        } else if root.join("unified/cgroup.controllers").exists() {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    }
}

/// What the node knows about its machine.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel_version: String,
    pub operating_system: String,
    /// Go-style names (amd64, arm64), so Swarm-style constraints carry over.
    pub architecture: String,
    pub ncpu: i64,
    pub memory_bytes: i64,
    pub cgroup_mode: CgroupMode,
}

impl HostInfo {
    /// Reads the running host.
    pub fn detect() -> HostInfo {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        HostInfo {
            hostname: field(|u| u.nodename()),
            kernel_version: field(|u| u.release()),
            operating_system: os_release_name().unwrap_or_else(|| "Linux".to_string()),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            ncpu: std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
            memory_bytes: mem_total_bytes().unwrap_or(0),
            cgroup_mode: CgroupMode::detect(Path::new("/sys/fs/cgroup")),
        }
    }
}

/// Maps Rust's architecture names to Go's, which Docker and Swarm use.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// PRETTY_NAME from /etc/os-release, e.g. "Debian GNU/Linux 12 (bookworm)".
fn os_release_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    parse_os_release(&text)
}

fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// MemTotal from /proc/meminfo, in bytes.
fn mem_total_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_and_meminfo() {
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let mem = "MemTotal:       24585932 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_mem_total(mem), Some(24585932 * 1024));
    }

    #[test]
    fn detects_cgroup_layouts() {
        let dir = std::env::temp_dir().join(format!("shoal-cg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("unified")).unwrap();
        assert_eq!(CgroupMode::detect(&dir), CgroupMode::V1);
        std::fs::write(dir.join("unified/cgroup.controllers"), "").unwrap();
        assert_eq!(CgroupMode::detect(&dir), CgroupMode::Hybrid);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(CgroupMode::detect(&dir), CgroupMode::V2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn maps_architectures_like_go() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }
}
