//! Teardown: whatever a node made must go, also after a panic, and whatever a killed test run
//! left behind is swept at the next start.
//!
//! A node owns three things that outlive its daemon by design (containers survive daemon death):
//! processes in its network namespace or cgroups, mounts under its directory, and cgroup
//! directories. They are found by name, never by memory, so teardown works from nothing but the
//! names: kill processes, wait until they are gone, unmount, remove cgroups, delete the netns.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::PREFIX;

/// What one node (or a dead test run) owns, by name.
pub struct Owned {
    pub netns: String,
    pub dir: PathBuf,
    pub cgroup_parent: String,
}

/// Removes everything `owned` names. Never panics: teardown must finish. Names that are not
/// the harness's own (empty, or without its prefix) are ignored: an empty cgroup parent would
/// otherwise mean every cgroup on the machine.
pub fn teardown(owned: &Owned) {
    let ours = |name: &str| name.starts_with(PREFIX);
    let owned = &Owned {
        netns: if ours(&owned.netns) {
            owned.netns.clone()
        } else {
            String::new()
        },
        dir: owned.dir.clone(),
        cgroup_parent: if ours(&owned.cgroup_parent) {
            owned.cgroup_parent.clone()
        } else {
            String::new()
        },
    };
    if !owned.dir.to_string_lossy().contains(PREFIX) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = owned_pids(owned);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!(
                    "teardown: processes {pids:?} of {} would not die",
                    owned.netns
                );
            }
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount_under(&owned.dir);
    remove_cgroups(&owned.cgroup_parent);
    delete_netns(&owned.netns);
    let _ = std::fs::remove_dir_all(&owned.dir);
}

/// SIGKILLs every process `owned` names (daemon, shims, containers) once, as a machine that
/// loses power would; the namespace, mounts and cgroups stay for teardown. Returns how many.
pub fn kill_processes(owned: &Owned) -> usize {
    let pids = owned_pids(owned);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    pids.len()
}

/// Processes in the node's netns, in its cgroups, or naming its directory on their command line.
fn owned_pids(owned: &Owned) -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    let netns_ino = std::fs::metadata(format!("/run/netns/{}", owned.netns))
        .map(|m| m.ino())
        .ok();
    let dir = owned.dir.to_string_lossy().into_owned();
    let mut pids: BTreeSet<i32> = cgroup_pids(&owned.cgroup_parent);
    let netns_ino = netns_ino.filter(|_| !owned.netns.is_empty());
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let in_netns = netns_ino.is_some_and(|ino| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .map(|l| l.to_string_lossy() == format!("net:[{ino}]"))
                .unwrap_or(false)
        });
        let names_dir = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&dir))
            .unwrap_or(false);
        if in_netns || names_dir {
            pids.insert(pid);
        }
    }
    // Zombies are already dead; their parents reap them.
    pids.retain(|pid| !is_zombie(*pid));
    pids
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Roots of every cgroup hierarchy: the unified one, or each v1 controller's (hybrid included).
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    std::fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Every cgroup directory under `parent`, deepest first (none for an empty name).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    if parent.is_empty() {
        return Vec::new();
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let dir = root.join(parent);
        if dir.is_dir() {
            walk(&dir, &mut out);
        }
    }
    out
}

fn cgroup_pids(parent: &str) -> BTreeSet<i32> {
    cgroup_dirs(parent)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| s.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
        .collect()
}

fn remove_cgroups(parent: &str) {
    for dir in cgroup_dirs(parent) {
        // A cgroup whose last process just died can be busy for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Mount points at or under `dir`, from this mount namespace's table.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&code, 8) {
                out.push(v as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn delete_netns(name: &str) {
    if !name.is_empty() && Path::new("/run/netns").join(name).exists() {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
    }
}

/// Once per test process: removes what earlier, killed test runs left (their PID is dead).
pub fn sweep_stale_once() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let mut stale: BTreeSet<String> = BTreeSet::new();
        let mut scan = |dir: &Path| {
            for name in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if let Some(owner) = stale_owner(&name.file_name().to_string_lossy()) {
                    stale.insert(owner);
                }
            }
        };
        scan(Path::new("/run/netns"));
        scan(&std::env::temp_dir());
        for root in cgroup_roots() {
            scan(&root);
        }
        // `<PREFIX>-<pid>-<n>` owns netns `<that>-<label>`, dir `<tmp>/<that>` and cgroups
        // `<that>-<label>`; sweep each name that starts with a dead owner's prefix.
        for owner in stale {
            let names: BTreeSet<String> = std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .chain(cgroup_roots().iter().flat_map(|r| {
                    std::fs::read_dir(r)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                }))
                .filter(|n| n.starts_with(&owner))
                .collect();
            for name in names {
                teardown(&Owned {
                    netns: name.clone(),
                    dir: std::env::temp_dir().join(&owner),
                    cgroup_parent: name,
                });
            }
            teardown(&Owned {
                netns: String::new(),
                dir: std::env::temp_dir().join(&owner),
                cgroup_parent: String::new(),
            });
        }
    });
}

/// For a harness-made name whose process is dead, the `<PREFIX>-<pid>-<n>` it belongs to.
fn stale_owner(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.splitn(3, '-');
    let pid: i32 = parts.next()?.parse().ok()?;
    let n: u32 = parts.next()?.parse().ok()?;
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    (!alive).then(|| format!("{PREFIX}-{pid}-{n}"))
}
