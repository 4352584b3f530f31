//! `shoal image import`: OCI image-layout archives, `docker save` archives, and plain root
//! filesystems (as `docker import`), each possibly gzip- or zstd-compressed as a whole.
//!
//! ```text
//! archive file ──scan names──> OCI layout? docker save? neither (rootfs, needs a tag)
//!   image archive: extract members to tmp/ (flat, by number: names never become paths)
//!     -> index/manifest.json -> manifest -> config   (each blob's sha256 checked)
//!     -> each layer: sha256(blob) == descriptor, decompress, unpack, sha256(tar) == diff_id
//!     -> blobs and layers renamed into the store -> image record written last (visible)
//! ```
//!
//! Every failure returns before the record is written, and the import's temp directory is
//! removed on the way out, so a refused archive leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use shoal_proto::{Duration as PbDuration, HealthConfig, ImageConfig};

use super::digest::{self, Digest, HashingReader, HashingWriter, is_hex64};
use super::reference::Reference;
use super::store::{ImageRecord, ImageStore, TempDir};
use super::unpack::{normalize_entry_path, unpack_layer};
use crate::engine::error::{EngineError, Result, io_err};

/// What the caller asked for.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// NAME[:TAG]; required for a root filesystem, an extra tag otherwise.
    pub tag: Option<String>,
    /// Treat the archive as a root filesystem even if it looks like an image archive.
    pub rootfs: bool,
}

/// What an import produced.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub images: Vec<(ImageRecord, Vec<String>)>,
    pub warnings: Vec<String>,
}

/// Imports the archive at `path` (a file the caller owns; it is only read).
pub fn import(store: &ImageStore, path: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    let extra_tag = opts.tag.as_deref().map(Reference::parse).transpose()?;
    let _guard = store.write_lock();
    let kind = if opts.rootfs {
        Kind::Rootfs
    } else {
        detect(path)?
    };
    match kind {
        Kind::Rootfs => {
            let Some(tag) = extra_tag else {
                return Err(EngineError::InvalidArgument(format!(
                    "{} is neither an OCI image layout nor a `docker save` archive; to import it \
                     as a root filesystem, give it a name with --tag NAME:TAG",
                    path.display()
                )));
            };
            import_rootfs(store, path, tag)
        }
        Kind::Oci | Kind::Docker => {
            let work = store.temp_dir("import")?;
            let archive = Outer::extract(path, &work)?;
            let mut report = ImportReport::default();
            let images = if kind == Kind::Oci {
                oci_images(&archive)?
            } else {
                docker_images(&archive)?
            };
            if images.is_empty() {
                return Err(EngineError::BadArchive(format!(
                    "{} holds no image for linux/{}",
                    path.display(),
                    crate::host::go_arch(std::env::consts::ARCH)
                )));
            }
            if extra_tag.is_some() && images.len() > 1 {
                return Err(EngineError::InvalidArgument(format!(
                    "{} holds {} images; --tag can name only one",
                    path.display(),
                    images.len()
                )));
            }
            for mut found in images {
                found.tags.extend(extra_tag.clone());
                let record = store_image(store, &archive, &work, &found, &mut report)?;
                store.save_image(&record, &found.tags)?;
                let tags = store.tags(&record.id)?;
                report.images.push((record, tags));
            }
            Ok(report)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Oci,
    Docker,
    Rootfs,
}

/// Opens a file, seeing through gzip or zstd compression by its magic bytes.
fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    decompress(
        BufReader::with_capacity(256 * 1024, file),
        &path.display().to_string(),
    )
}

/// Wraps a reader in the decompressor its first bytes call for.
fn decompress<'a, R: BufRead + 'a>(mut reader: R, what: &str) -> Result<Box<dyn Read + 'a>> {
    let head = reader
        .fill_buf()
        .map_err(|e| EngineError::BadArchive(format!("cannot read {what}: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| EngineError::BadArchive(format!("{what} is not valid zstd: {e}")))?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(reader))
    }
}

/// Looks at the top-level names only: index.json makes an OCI layout, manifest.json a docker
/// save archive (newer Docker writes both; the OCI index wins).
fn detect(path: &Path) -> Result<Kind> {
    let mut archive = tar::Archive::new(open_decompressed(path)?);
    let (mut index, mut manifest) = (false, false);
    let entries = archive.entries().map_err(|e| bad_tar(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad_tar(path, e))?;
        match normalize_entry_path(&entry.path_bytes())?.to_str() {
            Some("index.json") => index = true,
            Some("manifest.json") => manifest = true,
            _ => {}
        }
    }
    Ok(if index {
        Kind::Oci
    } else if manifest {
        Kind::Docker
    } else {
        Kind::Rootfs
    })
}

fn bad_tar(path: &Path, e: io::Error) -> EngineError {
    EngineError::BadArchive(format!(
        "{} is not a valid tar archive (corrupt or truncated?): {e}",
        path.display()
    ))
}

/// The members of an image archive, extracted flat into a temp dir.
struct Outer {
    files: BTreeMap<String, PathBuf>,
    /// Symlinks and hard links between members (docker save links repeated layers).
    links: BTreeMap<String, String>,
}

impl Outer {
    fn extract(path: &Path, work: &TempDir) -> Result<Outer> {
        let mut archive = tar::Archive::new(open_decompressed(path)?);
        let mut outer = Outer {
            files: BTreeMap::new(),
            links: BTreeMap::new(),
        };
        let entries = archive.entries().map_err(|e| bad_tar(path, e))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| bad_tar(path, e))?;
            let name = normalize_entry_path(&entry.path_bytes())?
                .to_string_lossy()
                .into_owned();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dest = work.path().join(format!("m{n}"));
                    let mut file = File::create(&dest).map_err(io_err("cannot create", &dest))?;
                    let want = entry.header().size().unwrap_or(0);
                    let got = io::copy(&mut entry, &mut file).map_err(|e| bad_tar(path, e))?;
                    if got != want {
                        return Err(EngineError::BadArchive(format!(
                            "{} is truncated: member {name} should hold {want} bytes, found {got}",
                            path.display()
                        )));
                    }
                    outer.files.insert(name, dest);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let hard = entry.header().entry_type() == tar::EntryType::Link;
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                    let target = String::from_utf8_lossy(&target).into_owned();
                    // Symlinks are relative to the link's directory, hard links to the root.
                    let base = if hard {
                        PathBuf::new()
                    } else {
                        Path::new(&name)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .to_path_buf()
                    };
                    outer.links.insert(name, lexical_join(&base, &target));
                }
                _ => {}
            }
        }
        Ok(outer)
    }

    /// The extracted file for a member name, following links between members.
    fn file(&self, name: &str) -> Result<&Path> {
        let mut name = lexical_join(Path::new(""), name);
        for _ in 0..16 {
            if let Some(p) = self.files.get(&name) {
                return Ok(p);
            }
            match self.links.get(&name) {
                Some(next) => name = next.clone(),
                None => break,
            }
        }
        Err(EngineError::BadArchive(format!(
            "the archive refers to {name}, which it does not contain (truncated archive?)"
        )))
    }

    /// A blob of an OCI layout by digest, checked against the digest and size.
    fn blob(&self, digest: &str, size: u64) -> Result<(Digest, &Path)> {
        let d = Digest::parse(digest)?;
        let path = self.file(&format!("blobs/sha256/{}", d.hex()))?;
        verify_file(path, &d, Some(size), &format!("blob {d}"))?;
        Ok((d, path))
    }
}

/// Joins `rel` to `base` lexically, dropping what would climb above the archive root.
fn lexical_join(base: &Path, rel: &str) -> String {
    let mut parts: Vec<String> = base
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
    parts.join("/")
}

/// Hashes a file and compares it with what it claims to be.
fn verify_file(path: &Path, want: &Digest, size: Option<u64>, what: &str) -> Result<()> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let (got, n) = HashingReader::new(BufReader::new(file))
        .finish()
        .map_err(io_err("cannot read", path))?;
    if &got != want {
        return Err(EngineError::BadArchive(format!(
            "digest mismatch for {what}: the content hashes to {got}; the archive is corrupt \
             or was tampered with"
        )));
    }
    if let Some(size) = size
        && size != n
    {
        return Err(EngineError::BadArchive(format!(
            "size mismatch for {what}: {n} bytes, the manifest says {size}"
        )));
    }
    Ok(())
}

/// One image found in an archive, before it is stored.
struct FoundImage {
    manifest: Option<(Digest, Vec<u8>)>,
    config: (Digest, Vec<u8>),
    /// Member name of each layer blob, with the digest it must have when the archive says so.
    layers: Vec<(String, Option<(Digest, u64)>)>,
    tags: Vec<Reference>,
}

fn host_arch() -> &'static str {
    crate::host::go_arch(std::env::consts::ARCH)
}

/// Walks an OCI layout's index (and nested indexes) to the manifests for this platform.
fn oci_images(archive: &Outer) -> Result<Vec<FoundImage>> {
    let index_path = archive.file("index.json")?;
    let index =
        ImageIndex::from_reader(File::open(index_path).map_err(io_err("cannot open", index_path))?)
            .map_err(|e| {
                EngineError::BadArchive(format!("index.json is not a valid OCI index: {e}"))
            })?;
    let mut out = Vec::new();
    let mut queue: Vec<(oci_spec::image::Descriptor, Option<String>)> = index
        .manifests()
        .iter()
        .map(|d| (d.clone(), ref_name(d)))
        .collect();
    let mut seen = 0;
    while let Some((desc, name)) = queue.pop() {
        seen += 1;
        if seen > 256 {
            return Err(EngineError::BadArchive(
                "the OCI index nests too deeply".into(),
            ));
        }
        if let Some(p) = desc.platform()
            && (p.os().to_string() != "linux" || p.architecture().to_string() != host_arch())
        {
            continue;
        }
        let (digest, path) = archive.blob(desc.digest().as_ref(), desc.size())?;
        let data = fs::read(path).map_err(io_err("cannot read", path))?;
        match desc.media_type() {
            MediaType::ImageIndex => {
                let nested = ImageIndex::from_reader(&data[..]).map_err(|e| {
                    EngineError::BadArchive(format!("nested index {digest} is invalid: {e}"))
                })?;
                queue.extend(nested.manifests().iter().map(|d| (d.clone(), name.clone())));
            }
            MediaType::ImageManifest | MediaType::Other(_) => {
                let manifest = ImageManifest::from_reader(&data[..]).map_err(|e| {
                    EngineError::BadArchive(format!("manifest {digest} is invalid: {e}"))
                })?;
                let cfg = manifest.config();
                let (cfg_digest, cfg_path) = archive.blob(cfg.digest().as_ref(), cfg.size())?;
                let cfg_data = fs::read(cfg_path).map_err(io_err("cannot read", cfg_path))?;
                let mut layers = Vec::new();
                for l in manifest.layers() {
                    check_layer_media_type(l.media_type())?;
                    let d = Digest::parse(l.digest().as_ref())?;
                    layers.push((format!("blobs/sha256/{}", d.hex()), Some((d, l.size()))));
                }
                let tags = name
                    .iter()
                    .filter_map(|n| Reference::parse(n).ok())
                    .collect();
                out.push(FoundImage {
                    manifest: Some((digest, data)),
                    config: (cfg_digest, cfg_data),
                    layers,
                    tags,
                });
            }
            other => {
                return Err(EngineError::BadArchive(format!(
                    "index entry {digest} has unsupported media type {other}"
                )));
            }
        }
    }
    Ok(out)
}

/// The image name an index entry carries, when it is a full reference (not a bare tag).
fn ref_name(d: &oci_spec::image::Descriptor) -> Option<String> {
    let ann = d.annotations().as_ref()?;
    ann.get("io.containerd.image.name")
        .or_else(|| ann.get("org.opencontainers.image.ref.name"))
        .filter(|n| n.contains(':') || n.contains('/'))
        .cloned()
}

fn check_layer_media_type(m: &MediaType) -> Result<()> {
    match m {
        MediaType::ImageLayer | MediaType::ImageLayerGzip | MediaType::ImageLayerZstd => Ok(()),
        MediaType::Other(s) if s.starts_with("application/vnd.docker.image.rootfs.diff.tar") => {
            Ok(())
        }
        other => Err(EngineError::BadArchive(format!(
            "layer media type {other} is not supported (only tar, tar+gzip and tar+zstd layers)"
        ))),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads a docker save archive's manifest.json. File names that look like digests are checked
/// against the content (never trusted), the rest is checked through the config's diff IDs.
fn docker_images(archive: &Outer) -> Result<Vec<FoundImage>> {
    let path = archive.file("manifest.json")?;
    let data = fs::read(path).map_err(io_err("cannot read", path))?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&data).map_err(|e| {
        EngineError::BadArchive(format!(
            "manifest.json of the docker archive is invalid: {e}"
        ))
    })?;
    let mut out = Vec::new();
    for e in entries {
        let cfg_path = archive.file(&e.config)?;
        let cfg_data = fs::read(cfg_path).map_err(io_err("cannot read", cfg_path))?;
        let cfg_digest = digest::of_bytes(&cfg_data);
        if let Some(claimed) = digest_in_name(&e.config)
            && claimed != cfg_digest
        {
            return Err(EngineError::BadArchive(format!(
                "digest mismatch for config {}: the content hashes to {cfg_digest}; the archive \
                 is corrupt or was tampered with",
                e.config
            )));
        }
        let layers = e
            .layers
            .iter()
            .map(|l| (l.clone(), digest_in_name(l).map(|d| (d, u64::MAX))))
            .collect();
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>>>()?;
        out.push(FoundImage {
            manifest: None,
            config: (cfg_digest, cfg_data),
            layers,
            tags,
        });
    }
    Ok(out)
}

/// `<hex>.json` or `blobs/sha256/<hex>` names claim a digest.
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    if is_hex64(hex) {
        Digest::from_hex(hex).ok()
    } else {
        None
    }
}

/// Verifies and stores one image's blobs and layers; returns its record (not yet saved).
fn store_image(
    store: &ImageStore,
    archive: &Outer,
    work: &TempDir,
    found: &FoundImage,
    report: &mut ImportReport,
) -> Result<ImageRecord> {
    let (cfg_digest, cfg_data) = &found.config;
    let config = ImageConfiguration::from_reader(&cfg_data[..]).map_err(|e| {
        EngineError::BadArchive(format!("image config {cfg_digest} is invalid: {e}"))
    })?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != found.layers.len() {
        return Err(EngineError::BadArchive(format!(
            "image config {cfg_digest} lists {} layers but the manifest has {}",
            diff_ids.len(),
            found.layers.len()
        )));
    }
    if config.architecture().to_string() != host_arch() {
        report.warnings.push(format!(
            "image {} is for {}, this node is {}; its programs may not run",
            cfg_digest.short(),
            config.architecture(),
            host_arch()
        ));
    }
    let mut size = 0;
    let mut layer_blobs = Vec::new();
    for ((member, expected), diff_id) in found.layers.iter().zip(&diff_ids) {
        let path = archive.file(member)?;
        let (blob, layer_size) = store_layer(store, work, path, member, expected, diff_id, report)?;
        size += layer_size;
        layer_blobs.push(blob);
    }
    store.put_blob(cfg_data)?;
    if let Some((_, data)) = &found.manifest {
        store.put_blob(data)?;
    }
    Ok(ImageRecord {
        id: cfg_digest.clone(),
        manifest_digest: found.manifest.as_ref().map(|(d, _)| d.clone()),
        layers: diff_ids,
        layer_blobs,
        created: config.created().clone(),
        size,
        architecture: config.architecture().to_string(),
        os: config.os().to_string(),
        config: image_defaults(&config, cfg_data),
    })
}

/// Checks one layer blob, unpacks it unless the store has it, and moves both into the store.
fn store_layer(
    store: &ImageStore,
    work: &TempDir,
    path: &Path,
    member: &str,
    expected: &Option<(Digest, u64)>,
    diff_id: &Digest,
    report: &mut ImportReport,
) -> Result<(Digest, u64)> {
    if store.has_layer(diff_id) {
        // Already unpacked from an earlier import; the blob must still decompress to exactly
        // that layer, or the archive is lying about what it holds.
        let file = File::open(path).map_err(io_err("cannot open", path))?;
        let mut blob_hasher = HashingReader::new(BufReader::new(file));
        let tar_digest = {
            let decompressed = decompress(BufReader::new(&mut blob_hasher), member)?;
            HashingReader::new(decompressed)
                .finish()
                .map_err(|e| {
                    EngineError::BadArchive(format!("layer {member} is corrupt or truncated: {e}"))
                })?
                .0
        };
        let (blob, _) = blob_hasher.finish().map_err(io_err("cannot read", path))?;
        check_blob(&blob, expected, member)?;
        check_diff_id(&tar_digest, diff_id, member)?;
        store.commit_blob(path, &blob)?;
        return Ok((blob, du(&store.layer_path(diff_id))));
    }
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut blob_hasher = HashingReader::new(BufReader::new(file));
    let dest = work.path().join(format!("layer-{}", diff_id.hex()));
    fs::create_dir(&dest).map_err(io_err("cannot create", &dest))?;
    let (tar_digest, stats) = {
        let decompressed = decompress(BufReader::new(&mut blob_hasher), member)?;
        let mut tar_hasher = HashingReader::new(decompressed);
        let stats = unpack_layer(&mut tar_hasher, &dest).map_err(|e| match e {
            EngineError::BadArchive(m) => EngineError::BadArchive(format!("layer {member}: {m}")),
            other => other,
        })?;
        let (d, _) = tar_hasher.finish().map_err(|e| {
            EngineError::BadArchive(format!("layer {member} is corrupt or truncated: {e}"))
        })?;
        (d, stats)
    };
    let (blob, _) = blob_hasher.finish().map_err(io_err("cannot read", path))?;
    check_blob(&blob, expected, member)?;
    check_diff_id(&tar_digest, diff_id, member)?;
    for dev in &stats.skipped_devices {
        report.warnings.push(format!(
            "skipped device node /{dev} in layer {}",
            diff_id.short()
        ));
    }
    store.commit_blob(path, &blob)?;
    store.commit_layer(&dest, diff_id)?;
    Ok((blob, stats.size))
}

fn check_diff_id(got: &Digest, want: &Digest, member: &str) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(EngineError::BadArchive(format!(
        "digest mismatch for layer {member}: its content hashes to {got} but the image config \
         says {want}; the archive is corrupt or was tampered with"
    )))
}

fn check_blob(got: &Digest, expected: &Option<(Digest, u64)>, member: &str) -> Result<()> {
    match expected {
        Some((want, _)) if want != got => Err(EngineError::BadArchive(format!(
            "digest mismatch for layer {member}: the content hashes to {got} but the archive \
             says {want}; the archive is corrupt or was tampered with"
        ))),
        _ => Ok(()),
    }
}

/// Bytes of regular file content under a directory.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// A plain root filesystem tar becomes a one-layer image with an empty config, as `docker
/// import` does. The layer blob kept is the uncompressed tar, so its digest is the diff ID.
fn import_rootfs(store: &ImageStore, path: &Path, tag: Reference) -> Result<ImportReport> {
    let work = store.temp_dir("import")?;
    let blob_tmp = work.path().join("layer.tar");
    let layer_dir = work.path().join("layer");
    fs::create_dir(&layer_dir).map_err(io_err("cannot create", &layer_dir))?;
    let blob_file = File::create(&blob_tmp).map_err(io_err("cannot create", &blob_tmp))?;
    let mut tee = Tee {
        inner: open_decompressed(path)?,
        copy: HashingWriter::new(io::BufWriter::new(blob_file)),
    };
    let stats = unpack_layer(&mut tee, &layer_dir)?;
    io::copy(&mut tee, &mut io::sink()).map_err(|e| bad_tar(path, e))?;
    let (diff_id, mut writer) = tee.copy.finish();
    writer.flush().map_err(io_err("cannot write", &blob_tmp))?;
    drop(writer);
    let now = crate::engine::time::format_rfc3339(std::time::SystemTime::now());
    let config = serde_json::json!({
        "created": now,
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": now, "created_by": "shoal image import" }],
    });
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| EngineError::Internal(format!("cannot encode config: {e}")))?;
    store.commit_blob(&blob_tmp, &diff_id)?;
    if !store.has_layer(&diff_id) {
        store.commit_layer(&layer_dir, &diff_id)?;
    }
    let id = store.put_blob(&config_bytes)?;
    let record = ImageRecord {
        id: id.clone(),
        manifest_digest: None,
        layers: vec![diff_id.clone()],
        layer_blobs: vec![diff_id],
        created: Some(now),
        size: stats.size,
        architecture: host_arch().to_string(),
        os: "linux".into(),
        config: ImageConfig::default(),
    };
    store.save_image(&record, std::slice::from_ref(&tag))?;
    let warnings = stats
        .skipped_devices
        .iter()
        .map(|d| format!("skipped device node /{d}"))
        .collect();
    let tags = store.tags(&id)?;
    Ok(ImportReport {
        images: vec![(record, tags)],
        warnings,
    })
}

/// Copies everything read through it into a writer (the layer blob beside its unpacking).
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The run defaults of an image config, including Docker's Healthcheck extension, which the OCI
/// config type does not carry.
pub fn image_defaults(config: &ImageConfiguration, raw: &[u8]) -> ImageConfig {
    let mut out = ImageConfig::default();
    if let Some(c) = config.config() {
        out.entrypoint = c.entrypoint().clone().unwrap_or_default();
        out.cmd = c.cmd().clone().unwrap_or_default();
        out.env = c.env().clone().unwrap_or_default();
        out.working_dir = c.working_dir().clone().unwrap_or_default();
        out.user = c.user().clone().unwrap_or_default();
        out.stop_signal = c.stop_signal().clone().unwrap_or_default();
        let mut ports = c.exposed_ports().clone().unwrap_or_default();
        ports.sort();
        out.exposed_ports = ports;
        out.labels = c.labels().clone().unwrap_or_default().into_iter().collect();
    }
    out.healthcheck = docker_healthcheck(raw);
    out
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DockerHealth {
    test: Vec<String>,
    interval: i64,
    timeout: i64,
    start_period: i64,
    retries: u32,
}

fn docker_healthcheck(raw: &[u8]) -> Option<HealthConfig> {
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let h: DockerHealth =
        serde_json::from_value(v.get("config")?.get("Healthcheck")?.clone()).ok()?;
    let dur = |ns: i64| {
        (ns > 0).then_some(PbDuration {
            seconds: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as u32,
        })
    };
    Some(HealthConfig {
        test: h.test,
        interval: dur(h.interval),
        timeout: dur(h.timeout),
        retries: h.retries,
        start_period: dur(h.start_period),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_links_resolve_lexically_inside_the_archive() {
        assert_eq!(
            lexical_join(Path::new("abc"), "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(
            lexical_join(Path::new(""), "../../../etc/passwd"),
            "etc/passwd"
        );
        assert_eq!(
            lexical_join(Path::new(""), "./blobs/sha256/x"),
            "blobs/sha256/x"
        );
    }

    #[test]
    fn digests_in_names_are_recognized() {
        let d = digest::of_bytes(b"x");
        assert_eq!(
            digest_in_name(&format!("{}.json", d.hex())),
            Some(d.clone())
        );
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{}", d.hex())),
            Some(d)
        );
        assert_eq!(digest_in_name("abc/layer.tar"), None);
    }

    #[test]
    fn image_defaults_include_docker_healthcheck() {
        let raw =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","echo"],"Env":["A=1"],
            "WorkingDir":"/srv","User":"nobody","StopSignal":"SIGQUIT",
            "ExposedPorts":{"80/tcp":{}},
            "Healthcheck":{"Test":["CMD","true"],"Interval":30000000000,"Retries":3}}}"#;
        let cfg = ImageConfiguration::from_reader(&raw[..]).unwrap();
        let d = image_defaults(&cfg, raw);
        assert_eq!(d.entrypoint, vec!["/bin/sh"]);
        assert_eq!(d.cmd, vec!["-c", "echo"]);
        assert_eq!(d.working_dir, "/srv");
        assert_eq!(d.user, "nobody");
        assert_eq!(d.stop_signal, "SIGQUIT");
        assert_eq!(d.exposed_ports, vec!["80/tcp"]);
        let h = d.healthcheck.unwrap();
        assert_eq!(h.test, vec!["CMD", "true"]);
        assert_eq!(h.interval.unwrap().seconds, 30);
        assert_eq!(h.retries, 3);
    }
}
