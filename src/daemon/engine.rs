//! The local `Engine` gRPC service: the CLI's `image` and `container` commands, served from the
//! node's container engine. Thin: each call goes to the engine and its error becomes a status
//! whose code tells the CLI whose fault it was (and, for a failed start, the exit code Docker
//! would give, in the `shoal-exit-code` metadata).

use std::sync::Arc;

use shoal_proto::engine_server::Engine as EngineService;
use shoal_proto::*;
use shoal_worker::engine::{
    ContainerConfig, Engine, EngineError, ExecOptions, ImportOptions, LocalEngine, LogOptions,
};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::network::{ContainerNetworks, Mode};

/// Metadata key carrying a failed start's exit code (125, 126, 127).
pub const EXIT_CODE_KEY: &str = "shoal-exit-code";

pub struct EngineApi {
    engine: LocalEngine,
    networks: Arc<ContainerNetworks>,
}

impl EngineApi {
    pub fn new(engine: LocalEngine, networks: Arc<ContainerNetworks>) -> EngineApi {
        EngineApi { engine, networks }
    }
}

/// Engine errors as gRPC statuses.
pub fn status(e: EngineError) -> Status {
    let msg = e.to_string();
    match e {
        EngineError::NotFound(_) => Status::not_found(msg),
        EngineError::InvalidArgument(_) | EngineError::BadArchive(_) => {
            Status::invalid_argument(msg)
        }
        EngineError::Conflict(_) | EngineError::Host(_) => Status::failed_precondition(msg),
        EngineError::StartFailed { exit_code, .. } => {
            let mut s = Status::aborted(msg);
            if let Ok(v) = exit_code.to_string().parse() {
                s.metadata_mut().insert(EXIT_CODE_KEY, v);
            }
            s
        }
        EngineError::Io { .. } | EngineError::Internal(_) => Status::internal(msg),
    }
}

type LogStream = tonic::codegen::BoxStream<LogEntry>;

#[tonic::async_trait]
impl EngineService for EngineApi {
    async fn image_import(
        &self,
        request: Request<Streaming<ImageImportChunk>>,
    ) -> Result<Response<ImageImportResponse>, Status> {
        let mut stream = request.into_inner();
        let path = self.engine.upload_path();
        let mut options = ImageImportOptions::default();
        let upload = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let mut first = true;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                if first {
                    options = chunk.options.unwrap_or_default();
                    first = false;
                }
                file.write_all(&chunk.data).await?;
            }
            file.flush().await?;
            Ok::<(), std::io::Error>(())
        };
        let result = match upload.await {
            Ok(()) => {
                let opts = ImportOptions {
                    tag: (!options.tag.is_empty()).then(|| options.tag.clone()),
                    rootfs: options.rootfs,
                };
                self.engine
                    .import_image(path.clone(), opts)
                    .await
                    .map_err(|e| {
                        // Name what the user gave, not our temp file.
                        let source = if options.source.is_empty() {
                            "the archive"
                        } else {
                            &options.source
                        };
                        let msg = e.to_string().replace(&path.display().to_string(), source);
                        status(match e {
                            EngineError::BadArchive(_) => EngineError::BadArchive(msg),
                            EngineError::InvalidArgument(_) => EngineError::InvalidArgument(msg),
                            other => other,
                        })
                    })
            }
            Err(e) => Err(Status::aborted(format!(
                "the upload of the archive failed: {e}"
            ))),
        };
        let _ = tokio::fs::remove_file(&path).await;
        result.map(Response::new)
    }

    async fn image_list(
        &self,
        _: Request<ImageListRequest>,
    ) -> Result<Response<ImageListResponse>, Status> {
        let images = self.engine.list_images().await.map_err(status)?;
        Ok(Response::new(ImageListResponse { images }))
    }

    async fn image_inspect(
        &self,
        request: Request<ImageInspectRequest>,
    ) -> Result<Response<ImageDetails>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.engine.inspect_image(&r.image).await.map_err(status)?,
        ))
    }

    async fn image_remove(
        &self,
        request: Request<ImageRemoveRequest>,
    ) -> Result<Response<ImageRemoveResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .engine
            .remove_image(&r.image, r.force)
            .await
            .map_err(status)?;
        Ok(Response::new(out))
    }

    async fn container_create(
        &self,
        request: Request<ContainerCreateRequest>,
    ) -> Result<Response<ContainerCreateResponse>, Status> {
        let r = request.into_inner();
        let mut config = ContainerConfig {
            name: (!r.name.is_empty()).then_some(r.name),
            spec: r.spec.unwrap_or_default(),
            limits: r.limits.unwrap_or_default(),
            cpu_shares: (r.cpu_shares > 0).then_some(r.cpu_shares),
            network_namespace: (!r.network_namespace.is_empty()).then_some(r.network_namespace),
            auto_remove: r.auto_remove,
        };
        if Mode::parse(&r.network)? == Mode::None {
            let (id, warnings) = self.engine.create_container(config).await.map_err(status)?;
            return Ok(Response::new(ContainerCreateResponse { id, warnings }));
        }
        if config.network_namespace.is_some() {
            return Err(Status::invalid_argument(
                "--network bridge gives the container a namespace of its own; it cannot be \
                 combined with --netns",
            ));
        }
        let (key, attachment) = self.networks.attach_new().await?;
        config.network_namespace = Some(attachment.netns_path.display().to_string());
        // The host's resolvers as a container behind the NAT can reach them.
        if config.spec.dns_config.is_none() {
            config.spec.dns_config =
                tokio::task::spawn_blocking(shoal_overlay::resolv::container_dns_config)
                    .await
                    .ok();
        }
        let created = self.engine.create_container(config).await;
        self.networks.created(&key, created.is_ok()).await;
        let (id, warnings) = created.map_err(status)?;
        tracing::debug!(container = %id, key, address = %attachment.address, "bridged container");
        self.networks.sweep_soon(&self.engine);
        Ok(Response::new(ContainerCreateResponse { id, warnings }))
    }

    async fn container_start(
        &self,
        request: Request<ContainerRef>,
    ) -> Result<Response<ContainerStartResponse>, Status> {
        let r = request.into_inner();
        self.engine.start_container(&r.id).await.map_err(status)?;
        Ok(Response::new(ContainerStartResponse {}))
    }

    async fn container_stop(
        &self,
        request: Request<ContainerStopRequest>,
    ) -> Result<Response<ContainerStopResponse>, Status> {
        let r = request.into_inner();
        let timeout = r.timeout.map(|d| d.to_std());
        self.engine
            .stop_container(&r.id, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(ContainerStopResponse {}))
    }

    async fn container_kill(
        &self,
        request: Request<ContainerKillRequest>,
    ) -> Result<Response<ContainerKillResponse>, Status> {
        let r = request.into_inner();
        self.engine
            .kill_container(&r.id, &r.signal)
            .await
            .map_err(status)?;
        Ok(Response::new(ContainerKillResponse {}))
    }

    async fn container_wait(
        &self,
        request: Request<ContainerRef>,
    ) -> Result<Response<ContainerExit>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.engine.wait_container(&r.id).await.map_err(status)?,
        ))
    }

    async fn container_remove(
        &self,
        request: Request<ContainerRemoveRequest>,
    ) -> Result<Response<ContainerRemoveResponse>, Status> {
        let r = request.into_inner();
        // Which attachment it had, while its record is still there to say.
        let key = match self.engine.inspect_container(&r.id).await {
            Ok(d) => self.networks.key_of(&d.network_namespace),
            Err(_) => None,
        };
        self.engine
            .remove_container(&r.id, r.force)
            .await
            .map_err(status)?;
        if let Some(key) = key {
            self.networks.release(&key).await;
        }
        Ok(Response::new(ContainerRemoveResponse {}))
    }

    async fn container_list(
        &self,
        request: Request<ContainerListRequest>,
    ) -> Result<Response<ContainerListResponse>, Status> {
        let r = request.into_inner();
        let containers = self.engine.list_containers(r.all).await.map_err(status)?;
        Ok(Response::new(ContainerListResponse { containers }))
    }

    async fn container_inspect(
        &self,
        request: Request<ContainerRef>,
    ) -> Result<Response<ContainerDetails>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.engine.inspect_container(&r.id).await.map_err(status)?,
        ))
    }

    async fn container_logs(
        &self,
        request: Request<ContainerLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        let options = LogOptions {
            follow: r.follow,
            tail: (r.tail >= 0).then_some(r.tail as usize),
        };
        let rx = self
            .engine
            .container_logs(&r.id, options)
            .await
            .map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn container_exec(
        &self,
        request: Request<ContainerExecRequest>,
    ) -> Result<Response<ContainerExecResponse>, Status> {
        let r = request.into_inner();
        let options = ExecOptions {
            cmd: r.cmd,
            env: r.env,
            user: (!r.user.is_empty()).then_some(r.user),
            workdir: (!r.workdir.is_empty()).then_some(r.workdir),
            timeout: r.timeout.map(|d| d.to_std()).filter(|d| !d.is_zero()),
        };
        let out = self.engine.exec(&r.id, options).await.map_err(status)?;
        Ok(Response::new(ContainerExecResponse {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
        }))
    }
}
