//! Unpacking one layer tar into its own directory, in overlayfs' representation of OCI
//! whiteouts, without ever writing outside that directory.
//!
//! Layers come from archives users hand us, so every entry is distrusted:
//! - names must be relative and free of `..` (refused otherwise: the whole layer fails);
//! - every parent directory is checked with lstat, so an entry never lands *through* a symlink
//!   an earlier entry planted (the classic `link -> /etc`, then `link/passwd`);
//! - relative symlink targets that climb above the layer root are refused; absolute targets are
//!   kept, since the kernel resolves them inside the container's root after pivot_root;
//! - hard links must name a file already unpacked in this layer;
//! - character and block devices are skipped with a warning (a container gets its /dev from the
//!   runtime; device files from an image would be a way around the device policy).
//!
//! Whiteouts become what overlayfs understands: `.wh.NAME` a 0:0 character device `NAME`, and
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::engine::error::{EngineError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What one archive entry means for the layer directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The root itself (`./`): nothing to create.
    Root,
    /// Delete `path` from the layers below (overlay: a 0:0 char device).
    Whiteout(PathBuf),
    /// Hide everything the layers below hold in directory `path`.
    Opaque(PathBuf),
    /// Create `path` as the entry says.
    Create(PathBuf),
    /// Ignore the entry (device node, or aufs metadata), with the reason.
    Skip(PathBuf, &'static str),
}

/// What unpacking found worth reporting.
#[derive(Debug, Default, Clone)]
pub struct UnpackStats {
    /// Bytes of regular file content.
    pub size: u64,
    /// Device nodes skipped, by path.
    pub skipped_devices: Vec<String>,
}

/// Turns an entry name into a path relative to the layer root, refusing absolute names and `..`.
pub fn normalize_entry_path(raw: &[u8]) -> Result<PathBuf> {
    let text = String::from_utf8_lossy(raw);
    if raw.first() == Some(&b'/') {
        return Err(EngineError::BadArchive(format!(
            "layer entry {text:?} has an absolute path; layer entries must be relative"
        )));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(std::ffi::OsStr::new(&*text)).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(EngineError::BadArchive(format!(
                    "layer entry {text:?} contains '..'; refusing a path that could leave the \
                     layer directory"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(EngineError::BadArchive(format!(
                    "layer entry {text:?} has an absolute path; layer entries must be relative"
                )));
            }
        }
    }
    Ok(out)
}

/// Decides what an entry means, from its normalized path and type.
pub fn classify(path: &Path, kind: EntryType) -> Action {
    if path.as_os_str().is_empty() {
        return Action::Root;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE_MARKER {
        return Action::Opaque(parent);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // aufs' own bookkeeping (.wh..wh.plnk and friends) has no meaning here.
            return Action::Skip(path.to_path_buf(), "aufs metadata");
        }
        return Action::Whiteout(parent.join(hidden));
    }
    match kind {
        EntryType::Char | EntryType::Block => Action::Skip(path.to_path_buf(), "device node"),
        _ => Action::Create(path.to_path_buf()),
    }
}

/// Refuses a relative symlink target that climbs above the layer root from `link`'s directory.
pub fn check_symlink_target(link: &Path, target: &Path) -> Result<()> {
    if target.is_absolute() {
        return Ok(());
    }
    let mut depth: i64 = link.parent().map_or(0, |p| p.components().count() as i64);
    for comp in target.components() {
        match comp {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(EngineError::BadArchive(format!(
                "layer entry {} is a symlink to {} which escapes the layer directory",
                link.display(),
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unpacks a (decompressed) layer tar into `dest`, which must exist and be empty.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| EngineError::BadArchive(format!("cannot read layer tar: {e}")))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| EngineError::BadArchive(format!("corrupt or truncated layer tar: {e}")))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            continue;
        }
        let rel = normalize_entry_path(&entry.path_bytes())?;
        match classify(&rel, kind) {
            Action::Root => {}
            Action::Skip(p, why) => {
                tracing::warn!(path = %p.display(), "skipping {why} in layer");
                if why == "device node" {
                    stats.skipped_devices.push(p.display().to_string());
                }
            }
            Action::Opaque(dir) => {
                let full = ensure_dir(dest, &dir)?;
                xattr::set(&full, "trusted.overlay.opaque", b"y").map_err(|e| {
                    EngineError::Host(format!(
                        "cannot mark {} opaque (trusted.overlay.opaque xattr): {e}; the store \
                         must be on a filesystem with trusted xattrs (ext4, xfs) and the daemon \
                         must run as root",
                        full.display()
                    ))
                })?;
            }
            Action::Whiteout(target) => {
                let full = ensure_parent(dest, &target)?;
                remove_existing(&full)?;
                nix::sys::stat::mknod(
                    &full,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| {
                    EngineError::Host(format!(
                        "cannot create whiteout {} (a 0:0 character device overlayfs needs): \
                         {e}; the daemon must run as root",
                        full.display()
                    ))
                })?;
            }
            Action::Create(path) => {
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                let uid = entry.header().uid().unwrap_or(0) as u32;
                let gid = entry.header().gid().unwrap_or(0) as u32;
                let full = ensure_parent(dest, &path)?;
                match kind {
                    EntryType::Directory => {
                        match fs::symlink_metadata(&full) {
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => {
                                remove_existing(&full)?;
                                mkdir(&full)?;
                            }
                            Err(_) => mkdir(&full)?,
                        }
                        chown(&full, uid, gid)?;
                        dirs.push((full, mode));
                    }
                    EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                        remove_existing(&full)?;
                        let mut file = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .custom_flags(nix::libc::O_NOFOLLOW)
                            .mode(0o600)
                            .open(&full)
                            .map_err(|e| EngineError::io("cannot create", &full, e))?;
                        let want = entry.header().size().unwrap_or(0);
                        let got = io::copy(&mut entry, &mut file).map_err(|e| {
                            EngineError::BadArchive(format!(
                                "corrupt or truncated layer tar at {}: {e}",
                                path.display()
                            ))
                        })?;
                        if got != want {
                            return Err(EngineError::BadArchive(format!(
                                "layer tar is truncated: {} should hold {want} bytes, found {got}",
                                path.display()
                            )));
                        }
                        stats.size += got;
                        chown(&full, uid, gid)?;
                        // After chown, which clears setuid/setgid bits.
                        set_mode(&file, &full, mode)?;
                    }
                    EntryType::Symlink => {
                        let target = entry.link_name_bytes().ok_or_else(|| {
                            EngineError::BadArchive(format!(
                                "layer symlink {} has no target",
                                path.display()
                            ))
                        })?;
                        let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                        check_symlink_target(&path, &target)?;
                        remove_existing(&full)?;
                        std::os::unix::fs::symlink(&target, &full)
                            .map_err(|e| EngineError::io("cannot create symlink", &full, e))?;
                        lchown(&full, uid, gid)?;
                    }
                    EntryType::Link => {
                        let target = entry.link_name_bytes().ok_or_else(|| {
                            EngineError::BadArchive(format!(
                                "layer hard link {} has no target",
                                path.display()
                            ))
                        })?;
                        let target_rel = normalize_entry_path(&target).map_err(|_| {
                            EngineError::BadArchive(format!(
                                "layer entry {} is a hard link to {} which escapes the layer \
                                 directory",
                                path.display(),
                                String::from_utf8_lossy(&target)
                            ))
                        })?;
                        let source = resolve_existing(dest, &target_rel).ok_or_else(|| {
                            EngineError::BadArchive(format!(
                                "layer entry {} is a hard link to {}, which is not a file \
                                 earlier in the same layer",
                                path.display(),
                                target_rel.display()
                            ))
                        })?;
                        remove_existing(&full)?;
                        fs::hard_link(&source, &full)
                            .map_err(|e| EngineError::io("cannot create hard link", &full, e))?;
                    }
                    EntryType::Fifo => {
                        remove_existing(&full)?;
                        nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(mode))
                            .map_err(|e| {
                                EngineError::io("cannot create fifo", &full, io::Error::from(e))
                            })?;
                        chown(&full, uid, gid)?;
                    }
                    other => {
                        tracing::warn!(path = %path.display(), kind = ?other, "skipping entry of unsupported type");
                    }
                }
            }
        }
    }
    // Directory modes last: a read-only directory must not stop its own entries being written.
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(|e| EngineError::io("cannot set mode of", &dir, e))?;
    }
    Ok(stats)
}

/// Makes sure every parent of `rel` under `root` is a real directory (creating missing ones, and
/// refusing symlinks or files on the way); returns the full path of `rel` itself.
fn ensure_parent(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp);
        if i + 1 == comps.len() {
            break;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(EngineError::BadArchive(format!(
                    "layer entry {} goes through symlink {}; refusing to write outside the layer",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )));
            }
            Ok(_) => {
                return Err(EngineError::BadArchive(format!(
                    "layer entry {} needs {} to be a directory, but it is a file",
                    rel.display(),
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                )));
            }
            Err(_) => mkdir(&cur)?,
        }
    }
    Ok(cur)
}

/// Like ensure_parent, for a directory path itself (opaque markers).
fn ensure_dir(root: &Path, rel: &Path) -> Result<PathBuf> {
    if rel.as_os_str().is_empty() {
        return Ok(root.to_path_buf());
    }
    let full = ensure_parent(root, rel)?;
    match fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => Ok(full),
        Ok(_) => Err(EngineError::BadArchive(format!(
            "opaque whiteout in {} but it is not a directory",
            rel.display()
        ))),
        Err(_) => {
            mkdir(&full)?;
            Ok(full)
        }
    }
}

/// The full path of an existing non-directory `rel` reached without symlinks on the way.
fn resolve_existing(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        cur.push(comp);
        let m = fs::symlink_metadata(&cur).ok()?;
        let last = i + 1 == comps.len();
        if (!last && !m.is_dir()) || (last && m.is_dir()) {
            return None;
        }
    }
    (!comps.is_empty()).then_some(cur)
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| EngineError::io("cannot replace", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| EngineError::io("cannot replace", path, e)),
        Err(_) => Ok(()),
    }
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| EngineError::io("cannot create directory", path, e))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| EngineError::io("cannot set owner of", path, e))
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| EngineError::io("cannot set owner of", path, e))
}

fn set_mode(file: &File, path: &Path, mode: u32) -> Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| EngineError::io("cannot set mode of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_stay_inside() {
        assert_eq!(
            normalize_entry_path(b"./bin/sh").unwrap(),
            PathBuf::from("bin/sh")
        );
        assert_eq!(normalize_entry_path(b"./").unwrap(), PathBuf::new());
        let abs = normalize_entry_path(b"/etc/passwd")
            .unwrap_err()
            .to_string();
        assert!(abs.contains("absolute"), "{abs}");
        let up = normalize_entry_path(b"a/../../etc")
            .unwrap_err()
            .to_string();
        assert!(up.contains("'..'"), "{up}");
    }

    #[test]
    fn whiteouts_are_classified() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            classify(&p("etc/.wh.motd"), EntryType::Regular),
            Action::Whiteout(p("etc/motd"))
        );
        assert_eq!(
            classify(&p("var/.wh..wh..opq"), EntryType::Regular),
            Action::Opaque(p("var"))
        );
        assert_eq!(
            classify(&p(".wh..wh..opq"), EntryType::Regular),
            Action::Opaque(p(""))
        );
        assert!(matches!(
            classify(&p(".wh..wh.plnk/1"), EntryType::Regular),
            Action::Create(_)
        ));
        assert!(matches!(
            classify(&p("x/.wh..wh.plnk"), EntryType::Regular),
            Action::Skip(_, "aufs metadata")
        ));
        assert_eq!(
            classify(&p("dev/sda"), EntryType::Block),
            Action::Skip(p("dev/sda"), "device node")
        );
        assert_eq!(
            classify(&p("bin/sh"), EntryType::Symlink),
            Action::Create(p("bin/sh"))
        );
    }

    #[test]
    fn symlinks_may_not_climb_out() {
        let p = |s: &str| PathBuf::from(s);
        assert!(check_symlink_target(&p("bin/sh"), &p("busybox")).is_ok());
        assert!(check_symlink_target(&p("usr/bin/x"), &p("../../bin/busybox")).is_ok());
        assert!(check_symlink_target(&p("lib64/ld"), &p("/lib/ld-2.so")).is_ok());
        let err = check_symlink_target(&p("bin/sh"), &p("../../etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("escapes the layer"), "{err}");
        assert!(check_symlink_target(&p("evil"), &p("..")).is_err());
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        // set_path refuses '..', so write the raw name for hostile cases.
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-unpack-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn unpacks_files_links_and_dirs() {
        let data = tar_of(|b| {
            append(b, "bin/", EntryType::Directory, "", b"");
            append(b, "bin/busybox", EntryType::Regular, "", b"ELF...");
            append(b, "bin/sh", EntryType::Symlink, "busybox", b"");
            append(b, "bin/ash", EntryType::Link, "bin/busybox", b"");
        });
        let dir = temp_dir("ok");
        let stats = unpack_layer(&data[..], &dir).unwrap();
        assert_eq!(stats.size, 6);
        assert_eq!(fs::read(dir.join("bin/ash")).unwrap(), b"ELF...");
        assert_eq!(
            fs::read_link(dir.join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_writing_through_a_planted_symlink() {
        let outside = temp_dir("outside");
        let data = tar_of(|b| {
            append(
                b,
                "link",
                EntryType::Symlink,
                outside.to_str().unwrap(),
                b"",
            );
            append(b, "link/evil", EntryType::Regular, "", b"x");
        });
        let dir = temp_dir("through");
        let err = unpack_layer(&data[..], &dir).unwrap_err().to_string();
        assert!(err.contains("goes through symlink link"), "{err}");
        assert!(!outside.join("evil").exists());
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn refuses_escaping_hard_links_and_truncation() {
        let data = tar_of(|b| append(b, "h", EntryType::Link, "../../etc/passwd", b""));
        let dir = temp_dir("hard");
        let err = unpack_layer(&data[..], &dir).unwrap_err().to_string();
        assert!(err.contains("hard link"), "{err}");
        let data = tar_of(|b| append(b, "f", EntryType::Regular, "", &[7u8; 4000]));
        let err = unpack_layer(&data[..1500], &temp_dir("trunc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        let _ = fs::remove_dir_all(temp_dir("trunc"));
    }
}
