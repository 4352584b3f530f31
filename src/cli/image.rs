//! `shoal image import|ls|inspect|rm`: the node's image store, in the shape of `docker image`.
//!
//! Import streams the file to the daemon in chunks (so it also works against a remote daemon);
//! a directory is packed into a tar on the fly and imported as a root filesystem, as
//! `docker import` does with a tarball.

use std::io::Read;

use anyhow::{Context, Result, bail};
use shoal_proto::engine_client::EngineClient;
use shoal_proto::{
    ImageImportChunk, ImageImportOptions, ImageInspectRequest, ImageListRequest,
    ImageRemoveRequest, ImageSummary,
};
use tokio::sync::mpsc;

use super::Host;
use super::output::{Format, human_bytes, print_json, print_table, time_ago};

/// Size of the chunks an archive travels in.
const CHUNK: usize = 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image-layout or `docker save` archive (tar, optionally gzip/zstd), or a
    /// root filesystem (tarball or directory) with --tag.
    Import(ImportArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show an image's details as JSON.
    Inspect(InspectArgs),
    /// Remove images (refused while a container uses them).
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive, a root filesystem directory, or - for standard input.
    pub source: String,
    /// NAME[:TAG] for the image (required for a root filesystem).
    #[arg(short, long)]
    pub tag: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image with several tags in one go.
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(host: &Host, args: ImageArgs) -> Result<()> {
    let mut client = EngineClient::new(super::client::connect(host).await?);
    match args.command {
        ImageCommand::Import(a) => import(&mut client, a).await,
        ImageCommand::Ls(a) => {
            let images = client
                .image_list(ImageListRequest {})
                .await?
                .into_inner()
                .images;
            if a.quiet {
                let ids: String = images
                    .iter()
                    .map(|i| format!("{}\n", short_id(&i.id)))
                    .collect();
                super::output::print_lines(&ids);
                return Ok(());
            }
            match a.format {
                Format::Json => print_json(&images),
                Format::Table => {
                    print_table(
                        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                        &rows(&images),
                    );
                    Ok(())
                }
            }
        }
        ImageCommand::Inspect(a) => {
            let mut out = Vec::new();
            for image in a.images {
                out.push(
                    client
                        .image_inspect(ImageInspectRequest { image })
                        .await?
                        .into_inner(),
                );
            }
            print_json(&out)
        }
        ImageCommand::Rm(a) => {
            let mut failed = None;
            for image in a.images {
                match client
                    .image_remove(ImageRemoveRequest {
                        image,
                        force: a.force,
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        for t in r.untagged {
                            println!("Untagged: {t}");
                        }
                        for d in r.deleted {
                            println!("Deleted: {d}");
                        }
                    }
                    Err(e) => {
                        eprintln!("Error: {}", super::client::describe_status(&e));
                        failed = Some(e);
                    }
                }
            }
            match failed {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        }
    }
}

/// One row per tag (an untagged image shows <none>), as `docker images`.
fn rows(images: &[ImageSummary]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for i in images {
        let created = i.created.map(time_ago).unwrap_or_else(|| "N/A".into());
        let tags = if i.repo_tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            i.repo_tags.clone()
        };
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((&t, ""));
            rows.push(vec![
                repo.to_string(),
                tag.to_string(),
                short_id(&i.id).to_string(),
                created.clone(),
                human_bytes(i.size),
            ]);
        }
    }
    rows
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

async fn import(client: &mut EngineClient<tonic::transport::Channel>, a: ImportArgs) -> Result<()> {
    let is_dir = a.source != "-"
        && std::fs::metadata(&a.source)
            .map(|m| m.is_dir())
            .unwrap_or(false);
    if is_dir && a.tag.is_none() {
        bail!(
            "{} is a directory: it is imported as a root filesystem, which needs a name; add \
             --tag NAME:TAG",
            a.source
        );
    }
    if a.source != "-" && !is_dir {
        std::fs::metadata(&a.source).with_context(|| format!("cannot read {}", a.source))?;
    }
    let options = ImageImportOptions {
        tag: a.tag.clone().unwrap_or_default(),
        rootfs: is_dir,
        source: a.source.clone(),
    };
    let (tx, rx) = mpsc::channel::<ImageImportChunk>(4);
    let source = a.source.clone();
    // Reading (and tarring) is blocking work; it feeds the upload through a small channel.
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut first = Some(options);
        let mut send = |data: Vec<u8>| {
            let chunk = ImageImportChunk {
                options: first.take(),
                data,
            };
            tx.blocking_send(chunk)
                .map_err(|_| anyhow::anyhow!("the upload stopped"))
        };
        if is_dir {
            let mut writer = ChunkWriter {
                buf: Vec::new(),
                send: &mut send,
            };
            let mut builder = tar::Builder::new(&mut writer);
            builder.follow_symlinks(false);
            builder
                .append_dir_all(".", &source)
                .with_context(|| format!("cannot pack directory {source}"))?;
            builder.finish()?;
            drop(builder);
            let rest = std::mem::take(&mut writer.buf);
            send(rest)?;
            return Ok(());
        }
        let mut input: Box<dyn Read> = if source == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(&source).with_context(|| format!("cannot open {source}"))?)
        };
        let mut sent_any = false;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = input
                .read(&mut buf)
                .with_context(|| format!("cannot read {source}"))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            send(buf)?;
            sent_any = true;
        }
        // An empty input still sends the options, so the daemon can say what is wrong.
        if !sent_any {
            send(Vec::new())?;
        }
        Ok(())
    });
    let response = client
        .image_import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await.context("reader task failed")??;
    let response = response?.into_inner();
    for w in &response.warnings {
        eprintln!("Warning: {w}");
    }
    for i in &response.images {
        if i.repo_tags.is_empty() {
            println!("Loaded image ID: {}", i.id);
        }
        for t in &i.repo_tags {
            println!("Loaded image: {t}");
        }
    }
    Ok(())
}

/// Buffers tar output into upload-sized chunks.
struct ChunkWriter<'a, F: FnMut(Vec<u8>) -> Result<()>> {
    buf: Vec<u8>,
    send: &'a mut F,
}

impl<F: FnMut(Vec<u8>) -> Result<()>> std::io::Write for ChunkWriter<'_, F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::take(&mut self.buf);
            (self.send)(chunk).map_err(std::io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
