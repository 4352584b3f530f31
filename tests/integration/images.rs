//! Test images, built locally from Debian's busybox-static (no registry is reachable): a busybox
//! root filesystem packed as an OCI image layout and as a `docker save` archive, a three-layer
//! image with whiteouts, and hostile archives. Each is built once per test process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// Where Debian's busybox-static installs the binary.
const BUSYBOX: &str = "/bin/busybox";

/// Layer compression.
#[derive(Clone, Copy)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The archives every test shares.
pub struct Images {
    pub dir: PathBuf,
    /// OCI layout: busybox base layer (gzip) + a zstd layer with /etc/motd; tag test/busybox:oci.
    pub oci: PathBuf,
    /// docker save: one uncompressed layer; tag test/busybox:docker.
    pub docker: PathBuf,
    /// OCI layout, three layers; the top one deletes /data/gone and makes /opq opaque.
    pub three_layers: PathBuf,
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: install Debian's busybox-static (apt-get install busybox-static)"
        );
        // Named like every harness directory, so the next test run's stale sweep removes it
        // (a static is never dropped, so this process cannot).
        let dir = std::env::temp_dir().join(crate::harness::unique_name());
        std::fs::create_dir_all(&dir).unwrap();
        let base = busybox_layer();
        let motd = layer(&[("etc/motd", File::Data(b"welcome\n"))]);
        let oci = dir.join("busybox-oci.tar");
        std::fs::write(
            &oci,
            oci_archive(
                &[(base.clone(), Compression::Gzip), (motd, Compression::Zstd)],
                Some("test/busybox:oci"),
                &config_extra(),
            ),
        )
        .unwrap();
        let docker = dir.join("busybox-docker.tar");
        std::fs::write(
            &docker,
            docker_archive(std::slice::from_ref(&base), "test/busybox:docker"),
        )
        .unwrap();
        let second = layer(&[
            ("data/", File::Dir),
            ("data/keep", File::Data(b"keep\n")),
            ("data/gone", File::Data(b"gone\n")),
            ("opq/", File::Dir),
            ("opq/old", File::Data(b"old\n")),
        ]);
        let third = layer(&[
            ("data/.wh.gone", File::Data(b"")),
            ("opq/", File::Dir),
            ("opq/.wh..wh..opq", File::Data(b"")),
            ("opq/new", File::Data(b"new\n")),
        ]);
        let three_layers = dir.join("three-layers.tar");
        std::fs::write(
            &three_layers,
            oci_archive(
                &[
                    (base, Compression::None),
                    (second, Compression::Gzip),
                    (third, Compression::Zstd),
                ],
                Some("test/layers:3"),
                &config_extra(),
            ),
        )
        .unwrap();
        Images {
            dir,
            oci,
            docker,
            three_layers,
        }
    })
}

/// Image config defaults: a shell as the command and a PATH.
fn config_extra() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"],
        "Cmd": ["sh"],
        "WorkingDir": "/",
    })
}

/// What a layer entry holds.
pub enum File<'a> {
    Dir,
    Data(&'a [u8]),
    Symlink(&'a str),
    Hardlink(&'a str),
    CharDevice(u32, u32),
}

/// A layer tar from entries; names are written raw, so hostile ones (`..`, absolute) survive.
pub fn layer(entries: &[(&str, File)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, f) in entries {
        append(&mut b, name, f, 0o755);
    }
    b.into_inner().unwrap()
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, f: &File, mode: u32) {
    let mut h = Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    let data: &[u8] = match f {
        File::Dir => {
            h.set_entry_type(EntryType::Directory);
            &[]
        }
        File::Data(d) => {
            h.set_entry_type(EntryType::Regular);
            d
        }
        File::Symlink(t) => {
            h.set_entry_type(EntryType::Symlink);
            h.set_link_name(t).unwrap();
            &[]
        }
        File::Hardlink(t) => {
            h.set_entry_type(EntryType::Link);
            // set_link_name refuses '..'; write the raw bytes.
            let raw = t.as_bytes();
            h.as_old_mut().linkname[..raw.len()].copy_from_slice(raw);
            &[]
        }
        File::CharDevice(major, minor) => {
            h.set_entry_type(EntryType::Char);
            h.set_device_major(*major).unwrap();
            h.set_device_minor(*minor).unwrap();
            &[]
        }
    };
    h.set_size(data.len() as u64);
    let raw = name.as_bytes();
    assert!(raw.len() < 100, "test entry names stay short");
    h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// busybox at /bin/busybox with a symlink per applet, /etc/passwd and /etc/group.
pub fn busybox_layer() -> Vec<u8> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    let applets = String::from_utf8(out.stdout).unwrap();
    let binary = std::fs::read(BUSYBOX).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for d in [
        "bin/", "etc/", "tmp/", "root/", "proc/", "sys/", "dev/", "mnt/", "home/",
    ] {
        append(
            &mut b,
            d,
            &File::Dir,
            if d == "tmp/" { 0o1777 } else { 0o755 },
        );
    }
    append(&mut b, "bin/busybox", &File::Data(&binary), 0o755);
    for a in applets.lines().filter(|a| *a != "busybox" && !a.is_empty()) {
        append(
            &mut b,
            &format!("bin/{a}"),
            &File::Symlink("busybox"),
            0o777,
        );
    }
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = b"root:x:0:\nnogroup:x:65534:\n";
    append(&mut b, "etc/passwd", &File::Data(passwd), 0o644);
    append(&mut b, "etc/group", &File::Data(group), 0o644);
    b.into_inner().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn compress(data: &[u8], c: Compression) -> (Vec<u8>, &'static str) {
    match c {
        Compression::None => (data.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

/// The config JSON for layers (diff IDs computed from the uncompressed tars).
pub fn config_json(layers: &[Vec<u8>], extra: &serde_json::Value) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": shoal_arch(),
        "os": "linux",
        "config": extra,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn shoal_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image-layout tar holding one image.
pub fn oci_archive(
    layers: &[(Vec<u8>, Compression)],
    name: Option<&str>,
    extra: &serde_json::Value,
) -> Vec<u8> {
    let raw: Vec<Vec<u8>> = layers.iter().map(|(l, _)| l.clone()).collect();
    let config = config_json(&raw, extra);
    oci_archive_with(layers, &config, name)
}

/// Like oci_archive, with a given config (for inconsistent-config cases).
pub fn oci_archive_with(
    layers: &[(Vec<u8>, Compression)],
    config: &[u8],
    name: Option<&str>,
) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    for (l, c) in layers {
        let (data, media) = compress(l, *c);
        let hex = sha256_hex(&data);
        descs.push(serde_json::json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": data.len()}));
        blobs.push((hex, data));
    }
    let cfg_hex = sha256_hex(config);
    blobs.push((cfg_hex.clone(), config.to_vec()));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cfg_hex}"), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m_hex = sha256_hex(&manifest);
    blobs.push((m_hex.clone(), manifest.clone()));
    let mut m_desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{m_hex}"), "size": manifest.len(),
    });
    if let Some(n) = name {
        m_desc["annotations"] = serde_json::json!({"io.containerd.image.name": n, "org.opencontainers.image.ref.name": n.rsplit(':').next().unwrap()});
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m_desc]}))
        .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let put = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    put(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    put(&mut b, "index.json", &index);
    for (hex, data) in &blobs {
        put(&mut b, &format!("blobs/sha256/{hex}"), data);
    }
    b.into_inner().unwrap()
}

/// A legacy `docker save` tar: `<id>/layer.tar` files, `<config hex>.json`, manifest.json.
pub fn docker_archive(layers: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let config = config_json(layers, &config_extra());
    docker_archive_with(layers, &config, tag)
}

pub fn docker_archive_with(layers: &[Vec<u8>], config: &[u8], tag: &str) -> Vec<u8> {
    let cfg_name = format!("{}.json", sha256_hex(config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(
        &serde_json::json!([{ "Config": cfg_name, "RepoTags": [tag], "Layers": names }]),
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |name: &str, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    put("manifest.json", &manifest);
    put(&cfg_name, config);
    for (n, l) in names.iter().zip(layers) {
        put(n, l);
    }
    b.into_inner().unwrap()
}
