//! Resolving a path inside a container's root filesystem without escaping it: symlinks in the
//! image are followed as the container would see them (an absolute target starts at the
//! container's root, `..` stops at it), the way runc's securejoin does. Used for every mount
//! target, so an image cannot aim a bind mount at the host.

use std::path::{Component, Path, PathBuf};

/// `unsafe_path` resolved under `root`; the result always lies inside `root`.
pub fn secure_join(root: &Path, unsafe_path: &str) -> PathBuf {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = split(unsafe_path).into_iter().rev().collect();
    let mut links_followed = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(resolved.join("/")).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && links_followed < 255 => {
                links_followed += 1;
                let target = std::fs::read_link(&candidate).unwrap_or_default();
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(split(&target).into_iter().rev());
            }
            _ => resolved.push(part),
        }
    }
    root.join(resolved.join("/"))
}

fn split(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("shoal-securejoin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("dir", root.join("real/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(secure_join(&root, "/abs/passwd"), root.join("etc/passwd"));
        assert_eq!(secure_join(&root, "/real/up/etc"), root.join("etc"));
        assert_eq!(secure_join(&root, "/real/rel/x"), root.join("real/dir/x"));
        assert_eq!(secure_join(&root, "/../../x"), root.join("x"));
        assert!(secure_join(&root, "/loop/x").starts_with(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
