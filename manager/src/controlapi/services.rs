//! Services: create, read, update and remove the service objects the orchestrator reconciles.
//!
//! The API only writes the service object; everything that follows is the controllers'
//! reaction to that write, as in SwarmKit:
//!
//! ```text
//! CreateService ─► Store(service) ─► orchestrator makes tasks ─► allocator ─► scheduler ─► nodes
//! UpdateService ─► Store(service') ─► orchestrator adds/retires slots; new tasks use spec'
//! RemoveService ─► Store(-service) ─► orchestrator shuts the service's tasks down
//! ```
//!
//! UpdateService stores any valid new spec (keeping the old one in `previous_spec`); the
//! replica count takes effect at once, and tasks made from then on use the new spec. Replacing
//! running tasks whose spec changed (rolling updates with parallelism, delay and failure action)
//! is a later issue: until then existing tasks keep running with the spec they were made from.

use shoal_proto::{
    Config, CreateServiceRequest, Network, PortConfig, RemoveServiceRequest, Secret, Service,
    ServiceSpec, UpdateServiceRequest, list_services_request, port_config,
};
use shoal_raft::{By, Store, StoreError, View};
use tonic::Status;
use tracing::info;

use super::lookup::resolve_service;
use super::{ApiError, Read, store_status, validate};

pub(super) fn list(view: &View<'_>, filters: &list_services_request::Filters) -> Vec<Service> {
    let mut services: Vec<Service> = view
        .list::<Service>()
        .into_iter()
        .filter(|s| {
            let annotations = s.spec.as_ref().and_then(|sp| sp.annotations.as_ref());
            let name = annotations.map_or("", |a| a.name.as_str());
            (filters.names.is_empty() || filters.names.iter().any(|n| n == name))
                && (filters.id_prefixes.is_empty()
                    || filters.id_prefixes.iter().any(|p| s.id.starts_with(p)))
                && filters.labels.iter().all(|(k, v)| {
                    // An empty value asks only that the label be present (Docker's
                    // `--filter label=KEY`).
                    annotations
                        .and_then(|a| a.labels.get(k))
                        .is_some_and(|x| v.is_empty() || x == v)
                })
        })
        .collect();
    services.sort_by(|a, b| name_of(a).cmp(name_of(b)).then(a.id.cmp(&b.id)));
    services
}

fn name_of(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.annotations.as_ref())
        .map_or("", |a| a.name.as_str())
}

pub(super) async fn create(store: &Store, req: CreateServiceRequest) -> Result<Service, Status> {
    let mut spec = req.spec.ok_or_else(|| {
        Status::invalid_argument(
            "invalid spec: missing; CreateService needs the service's spec (image, mode, ...)",
        )
    })?;
    validate::service_spec(&spec)?;
    let id = shoal_proto::ids::new_id();
    let committed = store
        .update(|tx| {
            let annotations = spec.annotations.get_or_insert_with(Default::default);
            if annotations.name.is_empty() {
                annotations.name = free_name(&*tx, &id);
            }
            check_name_free(&*tx, &annotations.name, None)?;
            check_references(&*tx, &spec)?;
            check_ports(&*tx, &spec, &id)?;
            tx.create(Service {
                id: id.clone(),
                spec: Some(spec.clone()),
                ..Default::default()
            })?;
            Ok::<_, TxError>(())
        })
        .await
        .map_err(|e| e.into_status(0))?;
    let service = committed
        .get::<Service>(&id)
        .ok_or_else(|| Status::internal("the created service is missing from the commit"))?;
    info!(service.id = %service.id, service.name = %name_of(&service), "service created");
    Ok(service)
}

pub(super) async fn update(store: &Store, req: UpdateServiceRequest) -> Result<Service, Status> {
    if req.service_version == 0 {
        return Err(Status::invalid_argument(
            "invalid service_version: missing; read the service (GetService) and pass its \
             meta.version, so that a concurrent change is not overwritten",
        ));
    }
    let new_spec = if req.rollback {
        None
    } else {
        let spec = req.spec.clone().ok_or_else(|| {
            Status::invalid_argument(
                "invalid spec: missing; UpdateService needs the full new spec (or rollback=true)",
            )
        })?;
        validate::service_spec(&spec)?;
        Some(spec)
    };
    // Catch up with the leader first, so that the version the caller read (perhaps through
    // another manager) is not mistaken for one this replica has not seen yet.
    store.read_barrier().await.map_err(store_status)?;
    let committed = store
        .update(|tx| {
            let mut service = resolve_service(&*tx, &req.service_id)?;
            let version = service.meta.as_ref().map_or(0, |m| m.version);
            if req.service_version != version {
                return Err(stale(&service.id, req.service_version, version).into());
            }
            let old = service.spec.clone().unwrap_or_default();
            let mut spec = match &new_spec {
                Some(s) => s.clone(),
                None => service.previous_spec.clone().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "service {} has no previous spec to roll back to (it was never updated)",
                        service.id
                    ))
                })?,
            };
            // An unnamed update keeps the name; renaming is refused, as Swarm does (the name is
            // what DNS, `service ps` and stacks know the service by).
            let annotations = spec.annotations.get_or_insert_with(Default::default);
            let old_name = old.annotations.as_ref().map_or("", |a| a.name.as_str());
            if annotations.name.is_empty() {
                annotations.name = old_name.to_string();
            } else if annotations.name != old_name {
                return Err(Status::invalid_argument(format!(
                    "invalid spec.annotations.name (--name): renaming services is not supported \
                     ({old_name:?} -> {:?}); keep the name, or create a new service and remove \
                     this one",
                    annotations.name
                ))
                .into());
            }
            validate::mode_change(&old, &spec)?;
            check_references(&*tx, &spec)?;
            check_ports(&*tx, &spec, &service.id)?;
            service.previous_spec = Some(old);
            service.spec = Some(spec);
            // The version the caller read is the one the Store checks at commit, so a write
            // that lands between this read and the commit is refused too.
            service.meta.get_or_insert_with(Default::default).version = req.service_version;
            let id = service.id.clone();
            tx.update(service)?;
            Ok::<_, TxError>(id)
        })
        .await
        .map_err(|e| e.into_status(req.service_version))?;
    let service = committed
        .get::<Service>(&committed.value)
        .ok_or_else(|| Status::internal("the updated service is missing from the commit"))?;
    info!(service.id = %service.id, version = committed.index, rollback = req.rollback, "service updated");
    Ok(service)
}

pub(super) async fn remove(store: &Store, req: RemoveServiceRequest) -> Result<(), Status> {
    store.read_barrier().await.map_err(store_status)?;
    let committed = store
        .update(|tx| {
            let service = resolve_service(&*tx, &req.service_id)?;
            tx.delete::<Service>(&service.id)?;
            Ok::<_, ApiError>(service.id)
        })
        .await?;
    info!(service.id = %committed.value, "service removed; its tasks will be shut down");
    Ok(())
}

/// The refusal for an update made from a stale read.
fn stale(id: &str, read: u64, now: u64) -> Status {
    Status::aborted(format!(
        "service {id} changed since you read it (version {read}, now {now}); nothing was \
         applied: read it again and retry the update"
    ))
}

fn name_in_use(name: &str, holder: &str) -> Status {
    Status::already_exists(format!(
        "invalid spec.annotations.name (--name): service name {name:?} is already used by \
         service {holder}; choose another name, or remove that service first (`shoal service rm \
         {name}`)"
    ))
}

fn check_name_free(view: &impl Read, name: &str, except: Option<&str>) -> Result<(), Status> {
    match view
        .find::<Service>(By::Name(name))
        .into_iter()
        .find(|s| Some(s.id.as_str()) != except)
    {
        Some(holder) => Err(name_in_use(name, &holder.id)),
        None => Ok(()),
    }
}

/// Networks, secrets and configs a service refers to must exist (by ID or name) when it is
/// written: a task can only be made of what is there.
fn check_references(view: &impl Read, spec: &ServiceSpec) -> Result<(), Status> {
    fn exists<T: shoal_raft::Object>(view: &impl Read, id: &str, name: &str) -> bool {
        (!id.is_empty() && view.get::<T>(id).is_some())
            || [id, name]
                .iter()
                .any(|r| !r.is_empty() && !view.find::<T>(By::Name(r)).is_empty())
    }
    let missing = |field: String, kind: &str, reference: &str| {
        Status::not_found(format!(
            "invalid {field}: no {kind} {reference:?}; create it first, or check the name \
             (`shoal {kind} ls`)"
        ))
    };
    let Some(task) = spec.task.as_ref() else {
        return Ok(());
    };
    for (i, n) in task.networks.iter().enumerate() {
        if !exists::<Network>(view, &n.target, "") {
            let field = format!("spec.task.networks[{i}].target (--network)");
            return Err(missing(field, "network", &n.target));
        }
    }
    let Some(c) = task.container.as_ref() else {
        return Ok(());
    };
    for (i, r) in c.secrets.iter().enumerate() {
        if !exists::<Secret>(view, &r.secret_id, &r.secret_name) {
            let field = format!("spec.task.container.secrets[{i}] (--secret)");
            let reference = if r.secret_id.is_empty() {
                &r.secret_name
            } else {
                &r.secret_id
            };
            return Err(missing(field, "secret", reference));
        }
    }
    for (i, r) in c.configs.iter().enumerate() {
        if !exists::<Config>(view, &r.config_id, &r.config_name) {
            let field = format!("spec.task.container.configs[{i}] (--config)");
            let reference = if r.config_id.is_empty() {
                &r.config_name
            } else {
                &r.config_id
            };
            return Err(missing(field, "config", reference));
        }
    }
    Ok(())
}

/// A published routing-mesh port belongs to one service in the whole cluster (as Swarm): a
/// second service asking for it is refused, naming the holder.
fn check_ports(view: &impl Read, spec: &ServiceSpec, own_id: &str) -> Result<(), Status> {
    let ingress = |p: &&PortConfig| {
        p.published_port != 0 && p.publish_mode == port_config::PublishMode::Ingress as i32
    };
    let wanted = spec.endpoint.as_ref().map_or(&[][..], |e| &e.ports[..]);
    for (i, p) in wanted.iter().enumerate().filter(|(_, p)| ingress(p)) {
        for other in view.list::<Service>().iter().filter(|s| s.id != own_id) {
            let requested = other.spec.as_ref().and_then(|s| s.endpoint.as_ref());
            let allocated = other.endpoint.as_ref();
            let taken = requested
                .map_or(&[][..], |e| &e.ports[..])
                .iter()
                .chain(allocated.map_or(&[][..], |e| &e.ports[..]))
                .filter(ingress)
                .any(|q| q.published_port == p.published_port && q.protocol == p.protocol);
            if taken {
                return Err(Status::already_exists(format!(
                    "invalid spec.endpoint.ports[{i}] (--publish): port {} is already published \
                     by service {} ({}); publish another port, or remove that service first",
                    p.published_port,
                    name_of(other),
                    other.id
                )));
            }
        }
    }
    Ok(())
}

/// A generated name for an unnamed service, as Docker does: adjective_surname, free in the
/// Store (a suffix from the ID otherwise).
fn free_name(view: &impl Read, id: &str) -> String {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "quiet", "sharp", "steady", "vivid", "witty",
    ];
    const NAMES: [&str; 16] = [
        "babbage", "curie", "darwin", "euler", "fermi", "galois", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "wozniak",
    ];
    // The ID is random, so its first characters pick a random pair.
    let b = id.as_bytes();
    let pick = |i: usize, n: usize| b.get(i).map_or(0, |c| *c as usize) % n;
    let base = format!(
        "{}_{}",
        ADJECTIVES[pick(0, ADJECTIVES.len())],
        NAMES[pick(1, NAMES.len())]
    );
    if view.find::<Service>(By::Name(&base)).is_empty() {
        return base;
    }
    format!("{base}_{}", &id[..id.len().min(6)])
}

/// A failure inside a service transaction, keeping the Store's refusals structured so that a
/// refusal at commit (name taken, stale version) can be told in the service's own words.
#[derive(Debug)]
enum TxError {
    Store(StoreError),
    Api(Status),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Store(e)
    }
}

impl From<Status> for TxError {
    fn from(s: Status) -> TxError {
        TxError::Api(s)
    }
}

impl From<validate::SpecError> for TxError {
    fn from(e: validate::SpecError) -> TxError {
        TxError::Api(e.into())
    }
}

impl TxError {
    /// The status for the caller; `read` is the service version the caller presented.
    fn into_status(self, read: u64) -> Status {
        match self {
            TxError::Api(s) => s,
            TxError::Store(StoreError::NameTaken { name, holder, .. }) => {
                name_in_use(&name, &holder)
            }
            TxError::Store(StoreError::Conflict { id, actual, .. }) if read != 0 => {
                stale(&id, read, actual)
            }
            TxError::Store(e) => store_status(e),
        }
    }
}
