//! The runtime spec turned into the exact steps the init performs, before the container
//! process exists: parsing mount options, rlimit names and capability sets here (pure, tested)
//! leaves the cloned child nothing to decide and nothing to fail on but the kernel.

use std::ffi::CString;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sys::resource::Resource;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{caps, spec as specgen};
use crate::engine::error::{EngineError, Result};

/// The overlayfs root: lower layers (top first) as short names inside `links_dir`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    pub links_dir: PathBuf,
    pub lowers: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

impl RootfsMount {
    /// overlayfs mount data; lowerdirs are relative to `links_dir`, which keeps the options
    /// short enough for images with many layers.
    pub fn options(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// One mount as the init performs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStep {
    pub source: String,
    pub destination: String,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: String,
    /// Propagation to set after mounting (MS_PRIVATE etc.), empty for none.
    pub propagation: MsFlags,
    pub bind: bool,
}

/// Everything the init needs.
#[derive(Debug)]
pub struct Plan {
    pub args: Vec<CString>,
    pub env: Vec<String>,
    pub cwd: String,
    /// The user as given (name or number, optional group); resolved inside the container.
    pub user: String,
    pub groups: Vec<String>,
    pub hostname: Option<String>,
    pub rootfs: RootfsMount,
    pub readonly_root: bool,
    pub mounts: Vec<MountStep>,
    pub devices: Vec<String>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Join this network namespace; None with `new_netns`: a fresh one (loopback only).
    pub netns_path: Option<PathBuf>,
    pub new_netns: bool,
    pub caps: u64,
    pub no_new_privs: bool,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub sysctls: Vec<(String, String)>,
}

fn invalid(what: String) -> EngineError {
    EngineError::InvalidArgument(format!("runtime spec: {what}"))
}

impl Plan {
    pub fn from_spec(spec: &Spec, rootfs: RootfsMount) -> Result<Plan> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("no process section".into()))?;
        let args = process
            .args()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|a| CString::new(a).map_err(|_| invalid("an argument contains a NUL byte".into())))
            .collect::<Result<Vec<_>>>()?;
        if args.is_empty() {
            return Err(invalid("no command".into()));
        }
        let annotations = spec.annotations().clone().unwrap_or_default();
        let user = annotations
            .get(specgen::ANN_USER)
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", process.user().uid(), process.user().gid()));
        let groups = annotations
            .get(specgen::ANN_GROUPS)
            .map(|g| g.split(',').map(String::from).collect())
            .unwrap_or_default();
        let linux = spec
            .linux()
            .as_ref()
            .ok_or_else(|| invalid("no linux section".into()))?;
        let mut new_netns = false;
        let mut netns_path = None;
        for ns in linux.namespaces().iter().flatten() {
            if ns.typ() == LinuxNamespaceType::Network {
                match ns.path() {
                    Some(p) => netns_path = Some(p.clone()),
                    None => new_netns = true,
                }
            }
        }
        let cap_names: Vec<String> = process
            .capabilities()
            .as_ref()
            .and_then(|c| c.effective().clone())
            .unwrap_or_default()
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect();
        let mounts = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| {
                let options = m.options().clone().unwrap_or_default();
                let (flags, propagation, data) = parse_options(&options);
                let fstype = m.typ().clone().unwrap_or_default();
                let bind = fstype == "bind" || flags.contains(MsFlags::MS_BIND);
                MountStep {
                    source: m
                        .source()
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                    destination: m.destination().display().to_string(),
                    fstype,
                    flags: if bind {
                        flags | MsFlags::MS_BIND
                    } else {
                        flags
                    },
                    data,
                    propagation,
                    bind,
                }
            })
            .collect();
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                let name = serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                Ok((rlimit_resource(&name)?, r.soft(), r.hard()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().display().to_string(),
            user,
            groups,
            hostname: spec.hostname().clone(),
            rootfs,
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            mounts,
            devices: linux
                .devices()
                .iter()
                .flatten()
                .map(|d| d.path().display().to_string())
                .collect(),
            masked_paths: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            netns_path,
            new_netns,
            caps: caps::mask(&cap_names)?,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            rlimits,
            sysctls: linux
                .sysctl()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }
}

/// Mount options in the OCI (fstab) form: flags, propagation, and the rest as fs data.
pub fn parse_options(options: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" => propagation = MsFlags::MS_PRIVATE,
            "rprivate" => propagation = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => propagation = MsFlags::MS_SLAVE,
            "rslave" => propagation = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => propagation = MsFlags::MS_SHARED,
            "rshared" => propagation = MsFlags::MS_SHARED | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    (flags, propagation, data.join(","))
}

fn rlimit_resource(name: &str) -> Result<Resource> {
    Ok(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        other => return Err(invalid(format!("unknown rlimit {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ContainerSpec, ImageConfig, Resources};

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (f, p, d) = parse_options(&s(&["nosuid", "nodev", "mode=755", "size=65536k", "ro"]));
        assert_eq!(
            f,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert!(p.is_empty());
        assert_eq!(d, "mode=755,size=65536k");
        let (f, p, _) = parse_options(&s(&["rbind", "rprivate"]));
        assert_eq!(f, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(p, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn plan_follows_the_generated_spec() {
        let spec = ContainerSpec {
            command: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
            user: "nobody".into(),
            read_only: true,
            ..Default::default()
        };
        let built = specgen::build(&specgen::SpecInput {
            id: "abcdef0123456789",
            spec: &spec,
            limits: &Resources::default(),
            cpu_shares: None,
            image: &ImageConfig::default(),
            netns: Some("/run/netns/x"),
            cgroups_path: "/shoal/abc",
            files_dir: std::path::Path::new("/s/c"),
            ncpu: 1,
        })
        .unwrap();
        let rootfs = RootfsMount {
            links_dir: "/s/c/l".into(),
            lowers: vec!["0".into(), "1".into()],
            upper: "/s/c/upper".into(),
            work: "/s/c/work".into(),
            target: "/s/c/rootfs".into(),
        };
        assert_eq!(
            rootfs.options(),
            "lowerdir=0:1,upperdir=/s/c/upper,workdir=/s/c/work"
        );
        let plan = Plan::from_spec(&built.spec, rootfs).unwrap();
        assert_eq!(plan.args[2].to_str().unwrap(), "exit 3");
        assert_eq!(plan.user, "nobody");
        assert!(plan.readonly_root && plan.no_new_privs);
        assert_eq!(plan.netns_path, Some(PathBuf::from("/run/netns/x")));
        assert!(!plan.new_netns);
        assert_eq!(plan.caps, 0xa80425fb);
        assert_eq!(plan.devices.len(), 6);
        assert!(plan.masked_paths.contains(&"/proc/kcore".to_string()));
        let dev = plan
            .mounts
            .iter()
            .find(|m| m.destination == "/dev")
            .unwrap();
        assert!(dev.flags.contains(MsFlags::MS_NODEV) && !dev.bind);
        let hosts = plan
            .mounts
            .iter()
            .find(|m| m.destination == "/etc/hosts")
            .unwrap();
        assert!(hosts.bind && hosts.source == "/s/c/hosts");
        assert!(plan.rlimits.is_empty());
    }
}
