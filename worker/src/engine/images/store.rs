//! The image store under `<state>/engine/images`: content-addressed blobs, unpacked layers shared
//! by every image that has them, one record per image and one tag table.
//!
//! ```text
//! blobs/sha256/<hex>      manifests, configs and layer blobs, each verified before it lands
//! layers/<diff-id hex>/   a layer unpacked in overlayfs form (lowerdir of containers)
//! images/<id hex>.json    ImageRecord: what the image is made of and its run defaults
//! repositories.json       name:tag -> image ID
//! tmp/                    work space of imports; emptied at start-up
//! ```
//!
//! Crash safety: every file is written to tmp/ and renamed into place, and an image's record is
//! written only after all its blobs and layers are in place, so a crash mid-import leaves at most
//! unreferenced blobs and layers (swept at start-up), never a half-imported image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shoal_proto::{ImageConfig, ImageDetails, ImageSummary};

use super::digest::{Digest, is_hex64};
use super::reference::Reference;
use crate::engine::error::{EngineError, Result, io_err};

/// What the store knows about one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the config blob: the image ID, as in Docker.
    pub id: Digest,
    pub manifest_digest: Option<Digest>,
    /// Uncompressed layer digests (diff IDs), base first; names of the layers/ directories.
    pub layers: Vec<Digest>,
    /// Layer blobs as they arrived (possibly compressed), in the same order.
    pub layer_blobs: Vec<Digest>,
    /// RFC 3339 creation time from the config, if it had one.
    pub created: Option<String>,
    /// Bytes of unpacked file content.
    pub size: u64,
    pub architecture: String,
    pub os: String,
    /// Run defaults from the image config.
    pub config: ImageConfig,
}

/// The store itself; all methods block (call them from a blocking thread).
pub struct ImageStore {
    root: PathBuf,
    /// Serializes writers: imports, tagging and removal.
    lock: Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) the store at `root`, empties tmp/ and sweeps what no image references.
    pub fn open(root: &Path) -> Result<ImageStore> {
        for sub in ["blobs/sha256", "layers", "images", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        }
        let store = ImageStore {
            root: root.to_path_buf(),
            lock: Mutex::new(()),
        };
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp)
            .map_err(io_err("cannot read", &tmp))?
            .flatten()
        {
            remove_path(&entry.path());
        }
        store.sweep()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Holds the writer lock (imports take it for their whole run).
    pub fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh directory under tmp/, removed by the returned guard unless kept.
    pub fn temp_dir(&self, prefix: &str) -> Result<TempDir> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{prefix}-{}", random_hex(8)));
        fs::create_dir(&path).map_err(io_err("cannot create", &path))?;
        Ok(TempDir { path })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Moves a verified file into blobs/ (a no-op when the blob is already there).
    pub fn commit_blob(&self, verified: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        fs::rename(verified, &dest).map_err(io_err("cannot store blob", &dest))
    }

    /// Stores an in-memory blob (configs, manifests) under its own digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let digest = super::digest::of_bytes(data);
        let dest = self.blob_path(&digest);
        if !dest.exists() {
            atomic_write(&self.root.join("tmp"), &dest, data)?;
        }
        Ok(digest)
    }

    /// Moves a fully unpacked and verified layer into layers/.
    pub fn commit_layer(&self, unpacked: &Path, diff_id: &Digest) -> Result<()> {
        let dest = self.layer_path(diff_id);
        if dest.exists() {
            return Ok(());
        }
        fs::rename(unpacked, &dest).map_err(io_err("cannot store layer", &dest))
    }

    /// Writes an image record (the point at which an import becomes visible) and its tags.
    pub fn save_image(&self, record: &ImageRecord, tags: &[Reference]) -> Result<()> {
        let path = self.record_path(&record.id);
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| EngineError::Internal(format!("cannot encode image record: {e}")))?;
        atomic_write(&self.root.join("tmp"), &path, &json)?;
        if !tags.is_empty() {
            let mut repos = self.repositories()?;
            for tag in tags {
                repos.insert(tag.to_string(), record.id.clone());
            }
            self.save_repositories(&repos)?;
        }
        Ok(())
    }

    /// Every image with its tags.
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let repos = self.repositories()?;
        let mut out = Vec::new();
        let dir = self.root.join("images");
        for entry in fs::read_dir(&dir)
            .map_err(io_err("cannot read", &dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = Digest::from_hex(hex) else {
                continue;
            };
            let record = self.load(&id)?;
            let tags = tags_of(&repos, &id);
            out.push((record, tags));
        }
        out.sort_by(|a, b| b.0.created.cmp(&a.0.created).then(a.0.id.cmp(&b.0.id)));
        Ok(out)
    }

    /// Finds an image by name[:tag], full ID (with or without sha256:) or unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        let not_found = || {
            EngineError::NotFound(format!(
                "no such image: {reference}; import it with `shoal image import FILE` (see \
                 `shoal image ls` for what is here)"
            ))
        };
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let looks_like_id = hex.len() >= 4
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if looks_like_id {
            let matches: Vec<Digest> = self
                .ids()?
                .into_iter()
                .filter(|id| id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                1 => return self.load(&matches[0]),
                0 if reference.starts_with("sha256:") => return Err(not_found()),
                0 => {}
                _ => {
                    return Err(EngineError::InvalidArgument(format!(
                        "image ID prefix {reference} is ambiguous; give more digits"
                    )));
                }
            }
        }
        let Ok(r) = Reference::parse(reference) else {
            return Err(not_found());
        };
        let repos = self.repositories()?;
        match repos.get(&r.to_string()) {
            Some(id) => self.load(id),
            None => Err(not_found()),
        }
    }

    /// Tags of one image.
    pub fn tags(&self, id: &Digest) -> Result<Vec<String>> {
        Ok(tags_of(&self.repositories()?, id))
    }

    /// Removes a tag, or the image itself when given by ID or its last tag goes. `in_use` says
    /// whether a container uses an image ID. Returns (untagged, deleted).
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> Option<String>,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let _guard = self.write_lock();
        let record = self.resolve(reference)?;
        let mut repos = self.repositories()?;
        let tags = tags_of(&repos, &record.id);
        let by_tag = Reference::parse(reference)
            .ok()
            .map(|r| r.to_string())
            .filter(|t| tags.contains(t));
        // Untagging one of several tags leaves the image in place, as Docker does.
        if let Some(tag) = &by_tag
            && tags.len() > 1
        {
            repos.remove(tag);
            self.save_repositories(&repos)?;
            return Ok((vec![tag.clone()], vec![]));
        }
        if by_tag.is_none() && tags.len() > 1 && !force {
            return Err(EngineError::Conflict(format!(
                "image {} is tagged {}; remove the tags one by one, or use --force",
                record.id.short(),
                tags.join(", ")
            )));
        }
        if let Some(container) = in_use(&record.id) {
            return Err(EngineError::Conflict(format!(
                "image {} ({}) is used by container {container}; remove the container first \
                 (`shoal container rm {container}`)",
                reference,
                record.id.short()
            )));
        }
        for t in &tags {
            repos.remove(t);
        }
        self.save_repositories(&repos)?;
        let path = self.record_path(&record.id);
        fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        self.sweep()?;
        Ok((tags, vec![record.id.to_string()]))
    }

    /// Removes layers and blobs no image references any more.
    fn sweep(&self) -> Result<()> {
        let mut layers = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        for id in self.ids()? {
            let Ok(r) = self.load(&id) else { continue };
            layers.extend(r.layers.iter().map(|d| d.hex().to_string()));
            blobs.extend(r.layer_blobs.iter().map(|d| d.hex().to_string()));
            blobs.insert(r.id.hex().to_string());
            if let Some(m) = &r.manifest_digest {
                blobs.insert(m.hex().to_string());
            }
        }
        for (sub, keep) in [("layers", &layers), ("blobs/sha256", &blobs)] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir)
                .map_err(io_err("cannot read", &dir))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    tracing::debug!(path = %entry.path().display(), "removing unreferenced");
                    remove_path(&entry.path());
                }
            }
        }
        Ok(())
    }

    fn ids(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("images");
        Ok(fs::read_dir(&dir)
            .map_err(io_err("cannot read", &dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(".json")?.to_string();
                is_hex64(&hex)
                    .then(|| Digest::from_hex(&hex).ok())
                    .flatten()
            })
            .collect())
    }

    fn load(&self, id: &Digest) -> Result<ImageRecord> {
        let path = self.record_path(id);
        let data = fs::read(&path).map_err(io_err("cannot read image record", &path))?;
        serde_json::from_slice(&data).map_err(|e| {
            EngineError::Internal(format!("image record {} is corrupt: {e}", path.display()))
        })
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    fn repositories(&self) -> Result<BTreeMap<String, Digest>> {
        let path = self.root.join("repositories.json");
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                EngineError::Internal(format!("tag table {} is corrupt: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(EngineError::io("cannot read", &path, e)),
        }
    }

    fn save_repositories(&self, repos: &BTreeMap<String, Digest>) -> Result<()> {
        let json = serde_json::to_vec_pretty(repos)
            .map_err(|e| EngineError::Internal(format!("cannot encode tag table: {e}")))?;
        atomic_write(
            &self.root.join("tmp"),
            &self.root.join("repositories.json"),
            &json,
        )
    }
}

impl ImageRecord {
    pub fn summary(&self, tags: Vec<String>) -> ImageSummary {
        ImageSummary {
            id: self.id.to_string(),
            repo_tags: tags,
            created: self
                .created
                .as_deref()
                .and_then(crate::engine::time::parse_rfc3339),
            size: self.size as i64,
        }
    }

    pub fn details(&self, tags: Vec<String>) -> ImageDetails {
        ImageDetails {
            id: self.id.to_string(),
            repo_tags: tags,
            created: self
                .created
                .as_deref()
                .and_then(crate::engine::time::parse_rfc3339),
            size: self.size as i64,
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            config: Some(self.config.clone()),
            layers: self.layers.iter().map(|d| d.to_string()).collect(),
            manifest_digest: self
                .manifest_digest
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default(),
        }
    }
}

fn tags_of(repos: &BTreeMap<String, Digest>, id: &Digest) -> Vec<String> {
    repos
        .iter()
        .filter(|(_, v)| *v == id)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Writes `data` to `dest` through a temp file in `tmp_dir` (same filesystem) and a rename.
pub fn atomic_write(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_dir.join(format!(".write-{}", random_hex(8)));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("cannot write", dest))
}

/// Removes a file or a directory tree, logging (not failing) on error: used for clean-up.
pub fn remove_path(path: &Path) {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

/// `n` random bytes as hex, from the kernel's generator.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // Never expected on Linux; fall back on time and PID so names still differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (std::process::id() as u8).wrapping_mul(i as u8);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temp directory removed on drop unless `keep` is called.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_path(&self.path);
    }
}
