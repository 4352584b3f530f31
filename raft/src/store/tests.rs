//! Unit tests of the Store's rules on the in-memory Store (the same `apply` replicas run).

use shoal_proto::{Annotations, Node, NodeDescription, ObjectKind, Service, ServiceSpec, Task};

use super::object::By;
use super::watch::{Action, WatchError};
use super::*;

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            annotations: Some(Annotations {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task(id: &str, service: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        ..Default::default()
    }
}

async fn create<T: Object>(store: &Store, obj: T) -> Committed<()> {
    store
        .update(|tx| tx.create(obj))
        .await
        .expect("create succeeds")
}

#[tokio::test]
async fn versions_are_commit_indexes_and_creation_time_is_kept() {
    let store = Store::in_memory();
    let c = create(&store, service("s1", "web")).await;
    let s: Service = store.get("s1").unwrap();
    assert_eq!(s.meta.as_ref().unwrap().version, c.index);
    let created = s.meta.as_ref().unwrap().created_at;
    assert!(created.is_some());

    let mut changed = s.clone();
    changed
        .spec
        .as_mut()
        .unwrap()
        .annotations
        .as_mut()
        .unwrap()
        .name = "web2".into();
    let c2 = store.update(|tx| tx.update(changed)).await.unwrap();
    let s2: Service = c2.get("s1").unwrap();
    assert_eq!(s2.meta.as_ref().unwrap().version, c2.index);
    assert!(c2.index > c.index);
    assert_eq!(s2.meta.as_ref().unwrap().created_at, created);
    assert_eq!(store.get::<Service>("s1").unwrap(), s2);
}

#[tokio::test]
async fn stale_update_is_refused_and_nothing_of_the_transaction_applies() {
    let store = Store::in_memory();
    create(&store, service("s1", "web")).await;
    let stale: Service = store.get("s1").unwrap();
    store.update(|tx| tx.update(stale.clone())).await.unwrap();

    let before = store.index();
    let err = store
        .update(|tx| {
            tx.create(task("t1", "s1", ""))?;
            tx.update(stale.clone())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref id, .. } if id == "s1"),
        "{err}"
    );
    assert!(err.to_string().contains("read it again"), "{err}");
    assert!(
        store.get::<Task>("t1").is_none(),
        "the task of the refused tx was applied"
    );
    // The refusal still took a log index, as it would in Raft.
    assert_eq!(store.index(), before + 1);
}

#[tokio::test]
async fn create_existing_update_missing_delete_missing_are_refused() {
    let store = Store::in_memory();
    create(&store, task("t1", "s", "")).await;
    let e = store
        .update(|tx| tx.create(task("t1", "s", "")))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    let e = store
        .update(|tx| tx.update(task("nope", "s", "")))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    let e = store
        .update(|tx| tx.delete::<Task>("nope"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    let e = store
        .update(|tx| tx.create(Task::default()))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
}

#[tokio::test]
async fn service_names_are_unique_but_may_be_swapped_in_one_transaction() {
    let store = Store::in_memory();
    create(&store, service("a", "web")).await;
    create(&store, service("b", "db")).await;
    let e = store
        .update(|tx| tx.create(service("c", "web")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::NameTaken { ref holder, .. } if holder == "a"),
        "{e}"
    );

    // Swap names atomically: legal, because names are checked on the final state.
    let (mut a, mut b): (Service, Service) = (store.get("a").unwrap(), store.get("b").unwrap());
    a.spec.as_mut().unwrap().annotations.as_mut().unwrap().name = "db".into();
    b.spec.as_mut().unwrap().annotations.as_mut().unwrap().name = "web".into();
    store
        .update(|tx| {
            tx.update(a)?;
            tx.update(b)
        })
        .await
        .unwrap();
    assert_eq!(store.view(|v| v.service_by_name("web")).unwrap().id, "b");
    assert_eq!(store.view(|v| v.service_by_name("db")).unwrap().id, "a");
}

#[tokio::test]
async fn indexes_follow_updates_and_deletes() {
    let store = Store::in_memory();
    create(&store, task("t1", "s1", "")).await;
    create(&store, task("t2", "s1", "n1")).await;
    create(&store, task("t3", "s2", "n1")).await;
    create(
        &store,
        Node {
            id: "n1".into(),
            description: Some(NodeDescription {
                hostname: "host-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let ids = |v: Vec<Task>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(store.find(By::ServiceId("s1"))), ["t1", "t2"]);
    assert_eq!(ids(store.find(By::NodeId("n1"))), ["t2", "t3"]);
    assert_eq!(store.view(|v| v.nodes_by_hostname("host-a")).len(), 1);

    // Scheduling t1 moves it into the node index; deleting t2 drops it from both.
    let mut t1: Task = store.get("t1").unwrap();
    t1.node_id = "n1".into();
    store
        .update(|tx| {
            tx.update(t1)?;
            tx.delete::<Task>("t2")
        })
        .await
        .unwrap();
    assert_eq!(ids(store.find(By::NodeId("n1"))), ["t1", "t3"]);
    assert_eq!(ids(store.find(By::ServiceId("s1"))), ["t1"]);
    assert_eq!(ids(store.find(By::IdPrefix("t"))), ["t1", "t3"]);
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes() {
    let store = Store::in_memory();
    create(&store, task("t1", "s1", "")).await;
    store
        .update(|tx| {
            tx.create(task("t2", "s1", ""))?;
            tx.delete::<Task>("t1")?;
            let seen: Vec<String> = tx
                .find::<Task>(By::ServiceId("s1"))
                .into_iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(seen, ["t2"]);
            assert!(tx.get::<Task>("t1").is_none());
            // Updating an object created in the same transaction changes what is created.
            let mut t2: Task = tx.get("t2").unwrap();
            t2.node_id = "n9".into();
            tx.update(t2)
        })
        .await
        .unwrap();
    assert_eq!(store.get::<Task>("t2").unwrap().node_id, "n9");
    assert!(store.get::<Task>("t1").is_none());
}

#[tokio::test]
async fn a_transaction_that_writes_nothing_commits_nothing() {
    let store = Store::in_memory();
    let before = store.index();
    let c = store
        .update(|tx| Ok::<_, StoreError>(tx.list::<Task>().len()))
        .await
        .unwrap();
    assert_eq!((c.value, c.index, store.index()), (0, before, before));
}

#[tokio::test]
async fn watch_sees_every_change_in_commit_order_with_old_values() {
    let store = Store::in_memory();
    let mut all = store.watch(&[]);
    let mut tasks_only = store.watch(&[ObjectKind::Task]);
    create(&store, service("s1", "web")).await;
    let c = create(&store, task("t1", "s1", "")).await;
    let mut t: Task = store.get("t1").unwrap();
    t.node_id = "n1".into();
    store.update(|tx| tx.update(t)).await.unwrap();
    store.update(|tx| tx.delete::<Task>("t1")).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = all.next().await.unwrap();
        seen.push((e.kind(), e.action, e.version));
    }
    assert_eq!(seen[0].0, ObjectKind::Service);
    assert_eq!(seen[1], (ObjectKind::Task, Action::Create, c.index));
    assert_eq!(seen[2].1, Action::Update);
    assert_eq!(seen[3].1, Action::Remove);
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2));

    let e = tasks_only.next().await.unwrap();
    assert_eq!((e.kind(), e.action), (ObjectKind::Task, Action::Create));
    let e = tasks_only.next().await.unwrap();
    assert_eq!(
        e.old
            .as_ref()
            .and_then(|o| Task::from_store_ref(o))
            .unwrap()
            .node_id,
        ""
    );
    assert_eq!(e.get::<Task>().unwrap().node_id, "n1");
}

#[tokio::test]
async fn view_and_watch_misses_nothing_and_doubles_nothing() {
    let store = Store::in_memory();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                create(&store, task(&format!("t{i:03}"), "s", "")).await;
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Start watching somewhere in the middle of the writes.
    while store.index() < 100 {
        tokio::task::yield_now().await;
    }
    let (snapshot, mut watch) = store.view_and_watch(&[ObjectKind::Task]);
    writer.await.unwrap();
    let mut ids: Vec<String> = snapshot.list::<Task>().into_iter().map(|t| t.id).collect();
    while ids.len() < 300 {
        let e = watch.next().await.unwrap();
        assert!(e.version > snapshot.index());
        ids.push(e.id().to_string());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 300, "an object was missed or doubled");
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_cut_off_with_a_clear_error() {
    let shared = Shared::new(Tables::default(), 0, 4);
    let store = Store::new(
        shared.clone(),
        Arc::new(LocalProposer { shared }),
        DEFAULT_READ_TIMEOUT,
    );
    let mut watch = store.watch(&[]);
    for i in 0..10 {
        create(&store, task(&format!("t{i}"), "s", "")).await;
    }
    for _ in 0..4 {
        watch.next().await.unwrap();
    }
    let err = watch.next().await.unwrap_err();
    assert_eq!(err, WatchError::Lagged(4));
    assert!(err.to_string().contains("view_and_watch"));
}

#[tokio::test]
async fn linearizable_reads_and_the_read_barrier_work_without_raft() {
    let store = Store::in_memory();
    create(&store, task("t1", "s", "")).await;
    assert_eq!(store.read_barrier().await.unwrap(), store.index());
    assert_eq!(store.linearizable(|v| v.count::<Task>()).await.unwrap(), 1);
}

#[test]
fn snapshots_round_trip_and_diff_reports_the_changes() {
    let mut a = Tables::default();
    let p = |actions: Vec<shoal_proto::StoreAction>| StoreProposal { actions };
    let act = |kind: shoal_proto::store_action::Kind, obj: StoreObject| shoal_proto::StoreAction {
        kind: kind as i32,
        object: Some(obj),
    };
    use shoal_proto::store_action::Kind;
    a.apply(
        1,
        &p(vec![act(Kind::Create, task("t1", "s", "").into_store())]),
    )
    .unwrap();
    a.apply(
        2,
        &p(vec![act(Kind::Create, task("t2", "s", "").into_store())]),
    )
    .unwrap();
    let bytes = a.encode_snapshot();
    let b = Tables::decode_snapshot(&bytes).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b.get(ObjectKind::Task, "t1"), a.get(ObjectKind::Task, "t1"));

    let mut c = b.clone();
    let mut t1 = Task::from_store_ref(c.get(ObjectKind::Task, "t1").unwrap())
        .unwrap()
        .clone();
    t1.node_id = "n".into();
    c.apply(
        3,
        &p(vec![
            act(Kind::Update, t1.into_store()),
            act(Kind::Delete, task("t2", "", "").into_store()),
            act(Kind::Create, task("t3", "s", "").into_store()),
        ]),
    )
    .unwrap();
    let mut actions: Vec<(String, Action)> = a
        .diff(&c)
        .into_iter()
        .map(|ch| (ch.object.id().to_string(), ch.action))
        .collect();
    actions.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        actions,
        [
            ("t1".to_string(), Action::Update),
            ("t2".to_string(), Action::Remove),
            ("t3".to_string(), Action::Create)
        ]
    );
}
