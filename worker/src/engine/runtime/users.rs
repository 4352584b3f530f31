//! Who the container's process runs as: `user[:group]` by name or number, looked up in the
//! container's own /etc/passwd and /etc/group (never the host's), as Docker does.

use std::path::Path;

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Supplementary groups: the user's memberships plus the ones asked for.
    pub groups: Vec<u32>,
}

/// Resolves against files (missing files read as empty: numeric users still work).
pub fn resolve(spec: &str, extra: &[String], passwd: &Path, group: &Path) -> Result<User, String> {
    let passwd = std::fs::read_to_string(passwd).unwrap_or_default();
    let group = std::fs::read_to_string(group).unwrap_or_default();
    resolve_in(spec, extra, &passwd, &group)
}

/// Resolves against file contents.
pub fn resolve_in(spec: &str, extra: &[String], passwd: &str, group: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, home, name) = match (found, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| format!("bad uid in /etc/passwd for {}", f[0]))?,
            f[3].parse()
                .map_err(|_| format!("bad gid in /etc/passwd for {}", f[0]))?,
            f[5].to_string(),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in the container's \
                 /etc/passwd"
            ));
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let group_id = |g: &str| -> Result<u32, String> {
        if let Ok(n) = g.parse::<u32>() {
            return Ok(n);
        }
        groups
            .iter()
            .find(|f| f[0] == g)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                format!(
                    "unable to find group {g}: no matching entries in the container's /etc/group"
                )
            })
    };
    if let Some(g) = group_part {
        gid = group_id(g)?;
    }
    let mut supplementary: Vec<u32> = match &name {
        Some(n) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    for g in extra.iter().filter(|g| !g.is_empty()) {
        supplementary.push(group_id(g)?);
    }
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(User {
        uid,
        gid,
        home,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www,other\n";

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let root = resolve_in("", &[], PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let www = resolve_in("www", &[], PASSWD, GROUP).unwrap();
        assert_eq!((www.uid, www.gid, www.groups.clone()), (33, 33, vec![50]));
        let num = resolve_in("1234:5", &[], PASSWD, GROUP).unwrap();
        assert_eq!((num.uid, num.gid, num.home.as_str()), (1234, 5, "/"));
        let by_uid = resolve_in("33:staff", &["root".into()], PASSWD, GROUP).unwrap();
        assert_eq!(
            (by_uid.uid, by_uid.gid, by_uid.groups),
            (33, 50, vec![0, 50])
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = resolve_in("ghost", &[], PASSWD, GROUP).unwrap_err();
        assert!(e.contains("unable to find user ghost"), "{e}");
        let e = resolve_in("www:nogroup", &[], PASSWD, GROUP).unwrap_err();
        assert!(e.contains("unable to find group nogroup"), "{e}");
    }
}
