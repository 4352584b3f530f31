//! The Control API's services and tasks RPCs against an in-memory Store, called as the CLI
//! calls them; every refusal is checked for the field it names and the fix it gives.

use shoal_proto::control_server::Control;
use shoal_proto::*;
use shoal_raft::Store;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status};

use super::ControlApi;

fn api() -> (ControlApi, Store) {
    let store = Store::in_memory();
    (ControlApi::new(store.clone()), store)
}

/// A spec as `shoal service create --name NAME --replicas N IMAGE` makes it.
fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas,
        })),
        ..Default::default()
    }
}

async fn create(api: &ControlApi, spec: ServiceSpec) -> Result<Service, Status> {
    Ok(api
        .create_service(Request::new(CreateServiceRequest { spec: Some(spec) }))
        .await?
        .into_inner()
        .service
        .unwrap())
}

async fn get(api: &ControlApi, reference: &str) -> Result<Service, Status> {
    Ok(api
        .get_service(Request::new(GetServiceRequest {
            service_id: reference.to_string(),
        }))
        .await?
        .into_inner()
        .service
        .unwrap())
}

async fn list(api: &ControlApi, filters: list_services_request::Filters) -> Vec<Service> {
    api.list_services(Request::new(ListServicesRequest {
        filters: Some(filters),
    }))
    .await
    .unwrap()
    .into_inner()
    .services
}

fn name(s: &Service) -> &str {
    &s.spec.as_ref().unwrap().annotations.as_ref().unwrap().name
}

fn replicas(s: &Service) -> u64 {
    match s.spec.as_ref().unwrap().mode {
        Some(service_spec::Mode::Replicated(r)) => r.replicas,
        _ => panic!("not replicated"),
    }
}

fn version(s: &Service) -> u64 {
    s.meta.as_ref().unwrap().version
}

/// Asserts a refusal's code and that its message holds every fragment.
fn assert_refused(status: &Status, code: Code, fragments: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for f in fragments {
        assert!(
            status.message().contains(f),
            "{:?} lacks {f:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn create_then_get_by_id_name_and_prefix() {
    let (api, store) = api();
    let s = create(&api, spec("web", 3)).await.unwrap();
    assert!(shoal_proto::ids::is_valid_id(&s.id));
    assert!(version(&s) > 0);
    assert_eq!(replicas(&s), 3);
    assert_eq!(store.get::<Service>(&s.id).unwrap(), s);
    for reference in [s.id.as_str(), "web", &s.id[..5]] {
        assert_eq!(get(&api, reference).await.unwrap().id, s.id, "{reference}");
    }
    let missing = get(&api, "nope").await.unwrap_err();
    assert_refused(
        &missing,
        Code::NotFound,
        &["no such service: nope", "service ls"],
    );
    let empty = get(&api, "").await.unwrap_err();
    assert_refused(&empty, Code::InvalidArgument, &["service ID or name"]);
}

#[tokio::test]
async fn unnamed_services_get_a_generated_unique_name() {
    let (api, _) = api();
    let a = create(&api, spec("", 1)).await.unwrap();
    let b = create(&api, spec("", 1)).await.unwrap();
    assert!(!name(&a).is_empty());
    assert_ne!(name(&a), name(&b));
    super::validate::service_name(name(&a)).unwrap();
    super::validate::service_name(name(&b)).unwrap();
}

#[tokio::test]
async fn ambiguous_prefix_lists_the_candidates() {
    let (api, store) = api();
    // IDs are random: store two services whose IDs share a prefix.
    for (id, n) in [("abc111", "one"), ("abc222", "two")] {
        store
            .update(|tx| {
                tx.create(Service {
                    id: id.into(),
                    spec: Some(spec(n, 1)),
                    ..Default::default()
                })
            })
            .await
            .unwrap();
    }
    let err = get(&api, "abc").await.unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["ambiguous", "abc111", "abc222", "longer ID"],
    );
    assert_eq!(get(&api, "abc2").await.unwrap().id, "abc222");
}

#[tokio::test]
async fn duplicate_name_is_refused_and_nothing_is_created() {
    let (api, store) = api();
    let first = create(&api, spec("web", 1)).await.unwrap();
    let err = create(&api, spec("web", 2)).await.unwrap_err();
    assert_refused(
        &err,
        Code::AlreadyExists,
        &[
            "spec.annotations.name (--name)",
            "\"web\"",
            &first.id,
            "choose another name",
        ],
    );
    assert_eq!(store.list::<Service>().len(), 1);
}

#[tokio::test]
async fn list_filters_by_name_prefix_and_label() {
    let (api, _) = api();
    let mut labelled = spec("api", 1);
    labelled
        .annotations
        .as_mut()
        .unwrap()
        .labels
        .insert("team".into(), "blue".into());
    let a = create(&api, labelled).await.unwrap();
    let w = create(&api, spec("web", 1)).await.unwrap();
    let all = list(&api, Default::default()).await;
    assert_eq!(all.iter().map(name).collect::<Vec<_>>(), ["api", "web"]);
    let by_name = list(
        &api,
        list_services_request::Filters {
            names: vec!["web".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].id, w.id);
    let by_prefix = list(
        &api,
        list_services_request::Filters {
            id_prefixes: vec![a.id[..8].to_string()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_prefix.len(), 1);
    assert_eq!(by_prefix[0].id, a.id);
    for (k, v, n) in [("team", "blue", 1), ("team", "", 1), ("team", "red", 0)] {
        let found = list(
            &api,
            list_services_request::Filters {
                labels: [(k.to_string(), v.to_string())].into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(found.len(), n, "{k}={v}");
    }
}

async fn update(
    api: &ControlApi,
    reference: &str,
    version: u64,
    spec: ServiceSpec,
) -> Result<Service, Status> {
    Ok(api
        .update_service(Request::new(UpdateServiceRequest {
            service_id: reference.to_string(),
            service_version: version,
            spec: Some(spec),
            rollback: false,
        }))
        .await?
        .into_inner()
        .service
        .unwrap())
}

#[tokio::test]
async fn scale_as_the_cli_does_and_refuse_a_stale_version() {
    let (api, _) = api();
    let s = create(&api, spec("web", 3)).await.unwrap();
    // `service scale web=5`: read, change the replica count, send it back with the version.
    let mut scaled = s.spec.clone().unwrap();
    scaled.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 5,
    }));
    let updated = update(&api, "web", version(&s), scaled.clone())
        .await
        .unwrap();
    assert_eq!(replicas(&updated), 5);
    assert!(version(&updated) > version(&s));
    assert_eq!(updated.previous_spec, s.spec);
    // A second writer still holding the first read is refused, and told to retry.
    let err = update(&api, &s.id, version(&s), scaled).await.unwrap_err();
    assert_refused(
        &err,
        Code::Aborted,
        &[
            &s.id,
            "changed since you read it",
            "read it again and retry",
        ],
    );
    assert_eq!(replicas(&get(&api, "web").await.unwrap()), 5);
    let err = update(&api, "web", 0, spec("web", 1)).await.unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["service_version", "meta.version"],
    );
}

#[tokio::test]
async fn update_stores_a_new_spec_but_refuses_renames_and_mode_changes() {
    let (api, _) = api();
    let s = create(&api, spec("web", 1)).await.unwrap();
    let mut new = spec("web", 1);
    new.task.as_mut().unwrap().container.as_mut().unwrap().image = "busybox:1.36".into();
    let s = update(&api, "web", version(&s), new).await.unwrap();
    assert_eq!(
        s.spec
            .as_ref()
            .unwrap()
            .task
            .as_ref()
            .unwrap()
            .container
            .as_ref()
            .unwrap()
            .image,
        "busybox:1.36"
    );
    // An unnamed spec keeps the name.
    let s = update(&api, "web", version(&s), spec("", 2)).await.unwrap();
    assert_eq!(name(&s), "web");

    let err = update(&api, "web", version(&s), spec("www", 2))
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["spec.annotations.name", "renaming"],
    );
    let mut global = spec("web", 0);
    global.mode = Some(service_spec::Mode::Global(GlobalService {}));
    let err = update(&api, "web", version(&s), global).await.unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["spec.mode (--mode)", "remove it and create"],
    );
    let mut bad = spec("web", 2);
    bad.task.as_mut().unwrap().container.as_mut().unwrap().image = String::new();
    let err = update(&api, "web", version(&s), bad).await.unwrap_err();
    assert_refused(&err, Code::InvalidArgument, &["spec.task.container.image"]);
    assert_eq!(
        get(&api, "web").await.unwrap(),
        s,
        "refused updates change nothing"
    );
    let err = update(&api, "nope", 1, spec("nope", 1)).await.unwrap_err();
    assert_refused(&err, Code::NotFound, &["no such service"]);
}

#[tokio::test]
async fn rollback_restores_the_previous_spec() {
    let (api, _) = api();
    let s = create(&api, spec("web", 1)).await.unwrap();
    let rollback = |version| UpdateServiceRequest {
        service_id: "web".into(),
        service_version: version,
        spec: None,
        rollback: true,
    };
    let err = api
        .update_service(Request::new(rollback(version(&s))))
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, &["no previous spec"]);
    let s2 = update(&api, "web", version(&s), spec("web", 4))
        .await
        .unwrap();
    let back = api
        .update_service(Request::new(rollback(version(&s2))))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(replicas(&back), 1);
    assert_eq!(
        replicas(&Service {
            spec: back.previous_spec.clone(),
            ..Default::default()
        }),
        4
    );
}

#[tokio::test]
async fn remove_deletes_the_service_by_name_and_leaves_tasks_to_the_orchestrator() {
    let (api, store) = api();
    let s = create(&api, spec("web", 1)).await.unwrap();
    let task_id = shoal_proto::ids::new_id();
    store
        .update(|tx| {
            tx.create(Task {
                id: task_id.clone(),
                service_id: s.id.clone(),
                slot: 1,
                desired_state: TaskState::Running as i32,
                ..Default::default()
            })
        })
        .await
        .unwrap();
    api.remove_service(Request::new(RemoveServiceRequest {
        service_id: "web".into(),
    }))
    .await
    .unwrap();
    assert!(store.get::<Service>(&s.id).is_none());
    // The orchestrator shuts the tasks down when it sees the deletion.
    assert!(store.get::<Task>(&task_id).is_some());
    let err = api
        .remove_service(Request::new(RemoveServiceRequest {
            service_id: "web".into(),
        }))
        .await
        .unwrap_err();
    assert_refused(&err, Code::NotFound, &["no such service: web"]);
    // The name is free again.
    create(&api, spec("web", 1)).await.unwrap();
}

fn task(id: &str, service: &str, slot: u64, node: &str, desired: TaskState) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        slot,
        node_id: node.into(),
        desired_state: desired as i32,
        ..Default::default()
    }
}

async fn list_tasks(api: &ControlApi, filters: list_tasks_request::Filters) -> Vec<String> {
    api.list_tasks(Request::new(ListTasksRequest {
        filters: Some(filters),
    }))
    .await
    .unwrap()
    .into_inner()
    .tasks
    .into_iter()
    .map(|t| t.id)
    .collect()
}

#[tokio::test]
async fn tasks_by_id_prefix_and_filters() {
    let (api, store) = api();
    store
        .update(|tx| {
            tx.create(task("t1aaa", "s1", 1, "n1", TaskState::Running))?;
            tx.create(task("t1bbb", "s1", 2, "n2", TaskState::Running))?;
            tx.create(task("t2ccc", "s1", 1, "n1", TaskState::Shutdown))?;
            tx.create(task("t3ddd", "s2", 1, "", TaskState::Running))
        })
        .await
        .unwrap();
    let all = list_tasks(&api, Default::default()).await;
    assert_eq!(
        all,
        ["t1aaa", "t2ccc", "t1bbb", "t3ddd"],
        "service, slot, node order"
    );
    let f = |service_ids: &[&str], node_ids: &[&str], desired: &[TaskState], prefixes: &[&str]| {
        list_tasks_request::Filters {
            service_ids: service_ids.iter().map(|s| s.to_string()).collect(),
            node_ids: node_ids.iter().map(|s| s.to_string()).collect(),
            desired_states: desired.iter().map(|d| *d as i32).collect(),
            id_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    };
    assert_eq!(list_tasks(&api, f(&["s2"], &[], &[], &[])).await, ["t3ddd"]);
    assert_eq!(
        list_tasks(&api, f(&["s1", "s1"], &["n1"], &[], &[])).await,
        ["t1aaa", "t2ccc"]
    );
    assert_eq!(
        list_tasks(&api, f(&["s1"], &[], &[TaskState::Running], &[])).await,
        ["t1aaa", "t1bbb"]
    );
    assert_eq!(list_tasks(&api, f(&[], &["n2"], &[], &[])).await, ["t1bbb"]);
    assert_eq!(
        list_tasks(&api, f(&[], &[], &[], &["t1", "t3"])).await,
        ["t1aaa", "t1bbb", "t3ddd"]
    );
    assert!(list_tasks(&api, f(&["s9"], &[], &[], &[])).await.is_empty());

    let get_task = |r: &str| {
        api.get_task(Request::new(GetTaskRequest {
            task_id: r.to_string(),
        }))
    };
    assert_eq!(
        get_task("t2").await.unwrap().into_inner().task.unwrap().id,
        "t2ccc"
    );
    assert_eq!(
        get_task("t1bbb")
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .slot,
        2
    );
    let err = get_task("t1").await.unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["ambiguous", "t1aaa", "t1bbb"],
    );
    let err = get_task("zz").await.unwrap_err();
    assert_refused(&err, Code::NotFound, &["no such task: zz"]);
}

/// Every bad input, each refused with the field it concerns and a fix, nothing stored.
#[tokio::test]
async fn bad_specs_name_the_field_and_the_fix() {
    let (api, store) = api();
    type Edit = fn(&mut ServiceSpec);
    fn container(s: &mut ServiceSpec) -> &mut ContainerSpec {
        s.task.as_mut().unwrap().container.as_mut().unwrap()
    }
    fn task(s: &mut ServiceSpec) -> &mut TaskSpec {
        s.task.as_mut().unwrap()
    }
    fn secs(seconds: i64) -> Option<Duration> {
        Some(Duration { seconds, nanos: 0 })
    }
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "empty image",
            |s| container(s).image = " ".into(),
            &["spec.task.container.image (IMAGE)", "e.g. busybox:latest"],
        ),
        (
            "uppercase image",
            |s| container(s).image = "BusyBox".into(),
            &["IMAGE", "lowercase", "\"busybox\""],
        ),
        (
            "image with space",
            |s| container(s).image = "busy box".into(),
            &["IMAGE", "whitespace"],
        ),
        (
            "bad tag",
            |s| container(s).image = "busybox:".into(),
            &["IMAGE", "invalid tag"],
        ),
        (
            "bad digest",
            |s| container(s).image = "busybox@sha256:xyz".into(),
            &["IMAGE", "digest", "sha256:"],
        ),
        (
            "bad path",
            |s| container(s).image = "team//app".into(),
            &["IMAGE", "not a valid image reference"],
        ),
        (
            "no container",
            |s| task(s).container = None,
            &["spec.task.container", "image"],
        ),
        ("no task", |s| s.task = None, &["spec.task", "image"]),
        (
            "no mode",
            |s| s.mode = None,
            &["spec.mode (--mode)", "replicated", "global"],
        ),
        (
            "absurd replicas",
            |s| {
                s.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas: u64::MAX,
                }))
            },
            &["--replicas", "negative", "from 0 to"],
        ),
        (
            "global with per-node max",
            |s| {
                s.mode = Some(service_spec::Mode::Global(GlobalService {}));
                task(s).placement = Some(Placement {
                    max_replicas: 2,
                    ..Default::default()
                });
            },
            &["--replicas-max-per-node", "global"],
        ),
        (
            "bad name",
            |s| s.annotations.as_mut().unwrap().name = "-web".into(),
            &["spec.annotations.name (--name)", "letters, digits"],
        ),
        (
            "long name",
            |s| s.annotations.as_mut().unwrap().name = "a".repeat(64),
            &["--name", "at most 63"],
        ),
        (
            "empty label key",
            |s| {
                s.annotations
                    .as_mut()
                    .unwrap()
                    .labels
                    .insert(String::new(), "x".into());
            },
            &["--label", "KEY=VALUE"],
        ),
        (
            "env without =",
            |s| container(s).env = vec!["FOO".into()],
            &["spec.task.container.env (--env)", "KEY=VALUE"],
        ),
        (
            "relative workdir",
            |s| container(s).dir = "app".into(),
            &["--workdir", "absolute"],
        ),
        (
            "bad user",
            |s| container(s).user = "a b".into(),
            &["--user", "user[:group]"],
        ),
        (
            "bad hostname",
            |s| container(s).hostname = "web_1!".into(),
            &["--hostname", "e.g. web-1"],
        ),
        (
            "bad stop signal",
            |s| container(s).stop_signal = "SIGNOPE".into(),
            &["--stop-signal", "SIGTERM"],
        ),
        (
            "negative grace",
            |s| container(s).stop_grace_period = secs(-1),
            &["--stop-grace-period", "non-negative"],
        ),
        (
            "bad constraint",
            |s| {
                task(s).placement = Some(Placement {
                    constraints: vec!["node.labels.zone=a".into()],
                    ..Default::default()
                })
            },
            &[
                "spec.task.placement.constraints (--constraint)",
                "node.labels.zone==a",
            ],
        ),
        (
            "unknown constraint key",
            |s| {
                task(s).placement = Some(Placement {
                    constraints: vec!["node.zone==a".into()],
                    ..Default::default()
                })
            },
            &["--constraint", "valid keys"],
        ),
        (
            "bad spread",
            |s| {
                task(s).placement = Some(Placement {
                    preferences: vec![PlacementPreference {
                        spread: "zone".into(),
                    }],
                    ..Default::default()
                })
            },
            &["--placement-pref", "spread=zone"],
        ),
        (
            "empty spread",
            |s| {
                task(s).placement = Some(Placement {
                    preferences: vec![PlacementPreference {
                        spread: String::new(),
                    }],
                    ..Default::default()
                })
            },
            &["--placement-pref", "spread=node.labels.zone"],
        ),
        (
            "bad restart condition",
            |s| {
                task(s).restart = Some(RestartPolicy {
                    condition: 7,
                    ..Default::default()
                })
            },
            &["--restart-condition", "on-failure"],
        ),
        (
            "negative restart delay",
            |s| {
                task(s).restart = Some(RestartPolicy {
                    delay: secs(-5),
                    ..Default::default()
                })
            },
            &["spec.task.restart.delay (--restart-delay)", "e.g. 5s"],
        ),
        (
            "negative restart window",
            |s| {
                task(s).restart = Some(RestartPolicy {
                    window: secs(-5),
                    ..Default::default()
                })
            },
            &["--restart-window"],
        ),
        (
            "bad nanos",
            |s| {
                task(s).restart = Some(RestartPolicy {
                    delay: Some(Duration {
                        seconds: 1,
                        nanos: 2_000_000_000,
                    }),
                    ..Default::default()
                })
            },
            &["--restart-delay", "not a valid duration"],
        ),
        (
            "relative bind source",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Bind as i32,
                    source: "data".into(),
                    target: "/data".into(),
                    ..Default::default()
                }]
            },
            &[
                "spec.task.container.mounts[0] (--mount)",
                "absolute source",
                "source=/srv/data",
            ],
        ),
        (
            "relative target",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    target: "scratch".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "target", "absolute"],
        ),
        (
            "volume mount",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Volume as i32,
                    source: "v".into(),
                    target: "/v".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "not supported yet", "type=bind"],
        ),
        (
            "tmpfs with source",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    source: "/x".into(),
                    target: "/t".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "no source"],
        ),
        (
            "duplicate targets",
            |s| {
                container(s).mounts = vec![
                    Mount {
                        r#type: mount::Type::Tmpfs as i32,
                        target: "/t".into(),
                        ..Default::default()
                    },
                    Mount {
                        r#type: mount::Type::Bind as i32,
                        source: "/s".into(),
                        target: "/t/".into(),
                        ..Default::default()
                    },
                ]
            },
            &["mounts[1]", "already used"],
        ),
        (
            "unknown mount type",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: 9,
                    target: "/t".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "bind or tmpfs"],
        ),
        (
            "negative cpu",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    reservations: Some(Resources {
                        nano_cpus: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["reservations.nano_cpus (--reserve-cpu)", "0.001"],
        ),
        (
            "tiny memory limit",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        memory_bytes: 1024,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["limits.memory_bytes (--limit-memory)", "at least 6m"],
        ),
        (
            "negative memory",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    reservations: Some(Resources {
                        memory_bytes: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["--reserve-memory", "negative"],
        ),
        (
            "negative pids",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        pids: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["--limit-pids", "positive"],
        ),
        (
            "reservation over limit",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        memory_bytes: 64 << 20,
                        ..Default::default()
                    }),
                    reservations: Some(Resources {
                        memory_bytes: 128 << 20,
                        ..Default::default()
                    }),
                })
            },
            &["--reserve-memory", "memory limit"],
        ),
        (
            "bad health test",
            |s| {
                container(s).healthcheck = Some(HealthConfig {
                    test: vec!["curl".into()],
                    ..Default::default()
                })
            },
            &["healthcheck.test (--health-cmd)", "CMD-SHELL"],
        ),
        (
            "empty health cmd",
            |s| {
                container(s).healthcheck = Some(HealthConfig {
                    test: vec!["CMD-SHELL".into(), " ".into()],
                    ..Default::default()
                })
            },
            &["--health-cmd", "one non-empty command"],
        ),
        (
            "tiny health interval",
            |s| {
                container(s).healthcheck = Some(HealthConfig {
                    interval: Some(Duration {
                        seconds: 0,
                        nanos: 10,
                    }),
                    ..Default::default()
                })
            },
            &["--health-interval", "1ms"],
        ),
        (
            "negative health timeout",
            |s| {
                container(s).healthcheck = Some(HealthConfig {
                    timeout: secs(-1),
                    ..Default::default()
                })
            },
            &["--health-timeout", "non-negative"],
        ),
        (
            "empty network",
            |s| {
                task(s).networks = vec![NetworkAttachmentConfig {
                    target: String::new(),
                    aliases: vec![],
                }]
            },
            &["spec.task.networks[0].target (--network)"],
        ),
        (
            "bad update ratio",
            |s| {
                s.update = Some(UpdateConfig {
                    max_failure_ratio: 2.0,
                    ..Default::default()
                })
            },
            &[
                "spec.update.max_failure_ratio (--update-max-failure-ratio)",
                "0 to 1",
            ],
        ),
        (
            "negative update delay",
            |s| {
                s.update = Some(UpdateConfig {
                    delay: secs(-1),
                    ..Default::default()
                })
            },
            &["spec.update.delay (--update-delay)"],
        ),
        (
            "absurd cpu",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: i64::MAX,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["limits.nano_cpus (--limit-cpu)", "0.01 to 1000000"],
        ),
        (
            "tiny cpu limit",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    limits: Some(Resources {
                        nano_cpus: 5_000_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["--limit-cpu", "from 0.01"],
        ),
        (
            "tiny cpu reservation",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    reservations: Some(Resources {
                        nano_cpus: 5,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["--reserve-cpu", "from 0.001"],
        ),
        (
            "reserved pids",
            |s| {
                task(s).resources = Some(ResourceRequirements {
                    reservations: Some(Resources {
                        pids: 5,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            },
            &["reservations.pids", "--limit-pids"],
        ),
        (
            "ulimit soft over hard",
            |s| {
                container(s).ulimits = vec![Ulimit {
                    name: "nofile".into(),
                    soft: 10,
                    hard: 5,
                }]
            },
            &["ulimits[0] (--ulimit)", "soft <= hard"],
        ),
        (
            "unknown ulimit",
            |s| {
                container(s).ulimits = vec![Ulimit {
                    name: "files".into(),
                    soft: 1,
                    hard: 2,
                }]
            },
            &["ulimits[0] (--ulimit)", "nofile"],
        ),
        (
            "secret without name",
            |s| container(s).secrets = vec![SecretReference::default()],
            &["secrets[0] (--secret)", "name or ID"],
        ),
        (
            "config without name",
            |s| container(s).configs = vec![ConfigReference::default()],
            &["configs[0] (--config)", "name or ID"],
        ),
        (
            "hostname template",
            |s| container(s).hostname = "{{.Node.Hostname}}".into(),
            &["--hostname", "templates", "not supported yet"],
        ),
        (
            "long hostname",
            |s| container(s).hostname = "a".repeat(65),
            &["--hostname", "at most 64"],
        ),
        (
            "host sysctl",
            |s| {
                container(s)
                    .sysctls
                    .insert("vm.swappiness".into(), "1".into());
            },
            &["sysctls (--sysctl)", "namespaced", "net.core.somaxconn"],
        ),
        (
            "bad capability",
            |s| container(s).capability_add = vec!["net admin".into()],
            &["capability_add (--cap-add)", "NET_ADMIN"],
        ),
        (
            "bad hosts entry",
            |s| container(s).hosts = vec!["db".into()],
            &["hosts[0] (--host)", "HOST:IP"],
        ),
        (
            "bad dns server",
            |s| {
                container(s).dns_config = Some(DnsConfig {
                    nameservers: vec!["dns.example".into()],
                    ..Default::default()
                })
            },
            &["nameservers[0] (--dns)", "IP address"],
        ),
        (
            "real-time stop signal",
            |s| container(s).stop_signal = "40".into(),
            &["--stop-signal", "e.g. SIGTERM"],
        ),
        (
            "root target",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    target: "/".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "other than /"],
        ),
        (
            "dotdot target",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    target: "/a/../etc".into(),
                    ..Default::default()
                }]
            },
            &["--mount", "without '..'"],
        ),
        (
            "negative tmpfs size",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Tmpfs as i32,
                    target: "/t".into(),
                    tmpfs_size_bytes: -1,
                    ..Default::default()
                }]
            },
            &["--mount", "tmpfs-size"],
        ),
        (
            "tmpfs options on bind",
            |s| {
                container(s).mounts = vec![Mount {
                    r#type: mount::Type::Bind as i32,
                    source: "/s".into(),
                    target: "/t".into(),
                    tmpfs_mode: 0o700,
                    ..Default::default()
                }]
            },
            &["--mount", "only to type=tmpfs"],
        ),
        (
            "bad registry host",
            |s| container(s).image = "bad_host.example:99999/app".into(),
            &["IMAGE", "registry host"],
        ),
        (
            "bad endpoint mode",
            |s| {
                s.endpoint = Some(EndpointSpec {
                    mode: 7,
                    ..Default::default()
                })
            },
            &["spec.endpoint.mode (--endpoint-mode)", "vip or dnsrr"],
        ),
        (
            "port published twice",
            |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![
                        PortConfig {
                            target_port: 80,
                            published_port: 8080,
                            ..Default::default()
                        },
                        PortConfig {
                            target_port: 81,
                            published_port: 8080,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })
            },
            &["ports[1] (--publish)", "given twice"],
        ),
        (
            "bad rollback order",
            |s| {
                s.rollback = Some(UpdateConfig {
                    order: 9,
                    ..Default::default()
                })
            },
            &["spec.rollback.order (--rollback-order)", "start-first"],
        ),
        (
            "bad platform",
            |s| {
                task(s).placement = Some(Placement {
                    platforms: vec![Platform::default()],
                    ..Default::default()
                })
            },
            &["platforms[0]", "linux/amd64"],
        ),
        (
            "bad port",
            |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig {
                        target_port: 0,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            },
            &["spec.endpoint.ports[0] (--publish)", "1-65535"],
        ),
    ];
    for (what, edit, fragments) in cases {
        let mut s = spec("web", 1);
        edit(&mut s);
        let err = create(&api, s).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("invalid spec"),
            "{what}: {}",
            err.message()
        );
        for f in fragments {
            assert!(
                err.message().contains(f),
                "{what}: {:?} lacks {f:?}",
                err.message()
            );
        }
    }
    let err = api
        .create_service(Request::new(CreateServiceRequest { spec: None }))
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, &["spec", "missing"]);
    // A network that does not exist is refused at write time, with the same care.
    let mut s = spec("web", 1);
    task_of(&mut s).networks = vec![NetworkAttachmentConfig {
        target: "backend".into(),
        aliases: vec![],
    }];
    let err = create(&api, s).await.unwrap_err();
    assert_refused(
        &err,
        Code::NotFound,
        &["spec.task.networks[0].target", "\"backend\"", "create it"],
    );
    assert!(store.list::<Service>().is_empty(), "nothing half-created");
}

fn task_of(s: &mut ServiceSpec) -> &mut TaskSpec {
    s.task.as_mut().unwrap()
}

#[tokio::test]
async fn valid_specs_pass() {
    let (api, _) = api();
    let mut s = spec("full", 2);
    {
        let c = task_of(&mut s).container.as_mut().unwrap();
        c.image = "registry.example.com:5000/team/app:1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into();
        c.env = vec!["A=1".into(), "EMPTY=".into()];
        c.dir = "/app".into();
        c.user = "1000:1000".into();
        c.hostname = "web-1.local".into();
        c.stop_signal = "sigquit".into();
        c.hosts = vec!["10.0.0.5 db".into(), "cache:10.0.0.6".into()];
        c.capability_add = vec!["CAP_NET_ADMIN".into(), "sys_time".into()];
        c.capability_drop = vec!["ALL".into()];
        c.sysctls.insert("net.core.somaxconn".into(), "1024".into());
        c.dns_config = Some(DnsConfig {
            nameservers: vec!["1.1.1.1".into(), "::1".into()],
            ..Default::default()
        });
        c.mounts = vec![
            Mount {
                r#type: mount::Type::Bind as i32,
                source: "/srv".into(),
                target: "/data".into(),
                read_only: true,
                ..Default::default()
            },
            Mount {
                r#type: mount::Type::Tmpfs as i32,
                target: "/scratch".into(),
                tmpfs_size_bytes: 1 << 20,
                tmpfs_mode: 0o1777,
                ..Default::default()
            },
        ];
        c.healthcheck = Some(HealthConfig {
            test: vec!["CMD".into(), "/bin/true".into()],
            interval: Some(Duration {
                seconds: 30,
                nanos: 0,
            }),
            ..Default::default()
        });
    }
    task_of(&mut s).placement = Some(Placement {
        constraints: vec!["node.labels.zone==a".into(), "node.role!=manager".into()],
        preferences: vec![PlacementPreference {
            spread: "node.labels.rack".into(),
        }],
        max_replicas: 2,
        platforms: vec![],
    });
    task_of(&mut s).resources = Some(ResourceRequirements {
        limits: Some(Resources {
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids: 100,
        }),
        reservations: Some(Resources {
            nano_cpus: 250_000_000,
            memory_bytes: 32 << 20,
            pids: 0,
        }),
    });
    create(&api, s).await.unwrap();
    let mut global = spec("agent", 0);
    global.mode = Some(service_spec::Mode::Global(GlobalService {}));
    create(&api, global).await.unwrap();
    for image in [
        "busybox",
        "localhost/app",
        "library/busybox:1.36.1",
        "a.b/c_d/e-f:v_1",
    ] {
        super::validate::image("IMAGE", image).unwrap_or_else(|e| panic!("{image}: {e}"));
    }
}

fn publish(s: &mut ServiceSpec, published_port: u32) {
    s.endpoint = Some(EndpointSpec {
        ports: vec![PortConfig {
            target_port: 80,
            published_port,
            ..Default::default()
        }],
        ..Default::default()
    });
}

#[tokio::test]
async fn a_published_port_belongs_to_one_service() {
    let (api, store) = api();
    let mut a = spec("a", 1);
    publish(&mut a, 8080);
    let a = create(&api, a).await.unwrap();
    let mut b = spec("b", 1);
    publish(&mut b, 8080);
    let err = create(&api, b.clone()).await.unwrap_err();
    assert_refused(
        &err,
        Code::AlreadyExists,
        &[
            "spec.endpoint.ports[0] (--publish)",
            "8080",
            "service a",
            &a.id,
        ],
    );
    assert_eq!(store.list::<Service>().len(), 1);
    publish(&mut b, 8081);
    create(&api, b).await.unwrap();
    // A service may keep (or re-state) its own port when updated.
    let mut again = a.spec.clone().unwrap();
    again.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 2,
    }));
    update(&api, "a", version(&a), again).await.unwrap();
}

#[tokio::test]
async fn references_must_exist_by_id_or_name() {
    let (api, store) = api();
    let mut s = spec("web", 1);
    task_of(&mut s).container.as_mut().unwrap().secrets = vec![SecretReference {
        secret_name: "db".into(),
        ..Default::default()
    }];
    let err = create(&api, s.clone()).await.unwrap_err();
    assert_refused(
        &err,
        Code::NotFound,
        &[
            "secrets[0] (--secret)",
            "no secret \"db\"",
            "create it first",
        ],
    );
    let network_id = shoal_proto::ids::new_id();
    store
        .update(|tx| {
            tx.create(Secret {
                id: shoal_proto::ids::new_id(),
                spec: Some(SecretSpec {
                    annotations: Some(Annotations {
                        name: "db".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })?;
            tx.create(Network {
                id: network_id.clone(),
                spec: Some(NetworkSpec {
                    annotations: Some(Annotations {
                        name: "backend".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .await
        .unwrap();
    task_of(&mut s).networks = vec![
        NetworkAttachmentConfig {
            target: "backend".into(),
            aliases: vec![],
        },
        NetworkAttachmentConfig {
            target: network_id,
            aliases: vec![],
        },
    ];
    create(&api, s).await.unwrap();
}

#[tokio::test]
async fn names_win_over_id_prefixes() {
    let (api, store) = api();
    let s = create(&api, spec("web", 1)).await.unwrap();
    // A service named like the start of another's ID is found by its name.
    let prefix = s.id[..4].to_string();
    let named = create(&api, spec(&prefix, 1)).await.unwrap();
    assert_eq!(get(&api, &prefix).await.unwrap().id, named.id);
    assert_eq!(store.list::<Service>().len(), 2);
}

#[tokio::test]
async fn image_references() {
    use super::validate::image;
    for ok in [
        "busybox",
        "busybox:latest",
        "localhost/app",
        "localhost:5000/app:1",
        "library/busybox:1.36.1",
        "a.b/c_d/e-f:v_1",
        "team/a__b--c.d",
        "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        image("IMAGE", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "Busybox",
        "busy box",
        "busybox:",
        "busybox:-x",
        ":latest",
        "/busybox",
        "busybox/",
        "a..b/c",
        "team/a..b",
        "team/a_-b",
        "team/a___b",
        "host:port/app",
        "app@sha256:short",
        "app@:abc",
    ] {
        let e = image("IMAGE", bad).expect_err(bad);
        assert!(e.to_string().starts_with("invalid IMAGE: "), "{bad}: {e}");
    }
}

#[tokio::test]
async fn watch_streams_existing_services_then_changes() {
    let (api, _) = api();
    let s = create(&api, spec("web", 1)).await.unwrap();
    let mut events = api
        .watch(Request::new(WatchRequest {
            kinds: vec![ObjectKind::Service as i32],
            include_existing: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.action, watch_event::Action::Existing as i32);
    let mut scaled = s.spec.clone().unwrap();
    scaled.mode = Some(service_spec::Mode::Replicated(ReplicatedService {
        replicas: 2,
    }));
    update(&api, "web", version(&s), scaled).await.unwrap();
    let next = events.next().await.unwrap().unwrap();
    assert_eq!(next.action, watch_event::Action::Update as i32);
    match next.object.and_then(|o| o.object) {
        Some(store_object::Object::Service(svc)) => assert_eq!(replicas(&svc), 2),
        other => panic!("expected the service, got {other:?}"),
    }
}
