//! One daemon per state directory: an exclusive flock on `<state-dir>/shoal.lock`, held for the
//! daemon's life. flock (not a PID file) so that a crashed daemon never leaves a stale lock: the
//! kernel drops it with the process. The PID written inside only helps the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

/// Holds the lock until dropped.
pub struct StateLock {
    _file: Flock<File>,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join("shoal.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another shoal daemon".to_string()
                } else {
                    format!("another shoal daemon (pid {holder})")
                };
                bail!(
                    "{who} is already using state directory {}; stop it first, or give this \
                     one its own --state-dir",
                    state_dir.display()
                );
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        };
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("shoal-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = StateLock::acquire(&dir).unwrap();
        let err = StateLock::acquire(&dir).err().unwrap().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("--state-dir"), "{err}");
        drop(first);
        StateLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
