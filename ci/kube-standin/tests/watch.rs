//! Watches through kube-rs: its `watcher` (list + watch, and streaming lists), raw
//! `Api::watch` streams, bookmarks, `410 Gone` and what a restart or compaction does to a
//! running watcher.

mod common;

use std::time::Duration;

use common::{PATIENCE, api_error, standin, standin_with, wait_until};
use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{PartialObjectMeta, ResourceExt};
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use sluice_kube_standin::{Options, ResourceId};
use tokio::sync::mpsc;

fn service(name: &str, ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {"ports": [{"port": 80}]}
    })
}

fn config_map(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"v": "0"}})
}

/// A watcher driven by its own task (so its watch stays open while the test does other
/// things), its items forwarded in order.
struct Events<K>(mpsc::UnboundedReceiver<Result<Event<K>, watcher::Error>>);

impl<K: Send + 'static> Events<K> {
    fn spawn(
        stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Self(rx)
    }
}

/// The next watcher item, or a panic after [`PATIENCE`].
async fn next<K>(s: &mut Events<K>) -> Result<Event<K>, watcher::Error> {
    tokio::time::timeout(PATIENCE, s.0.recv())
        .await
        .expect("a watcher event in time")
        .expect("the watcher goes on")
}

/// Skips to `InitDone`, returning the names applied during the initial listing.
async fn init<K: ResourceExt>(s: &mut Events<K>) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match next(s).await.expect("no watcher error during init") {
            Event::Init => names.clear(),
            Event::InitApply(o) => names.push(o.name_any()),
            Event::InitDone => return names,
            Event::Apply(_) | Event::Delete(_) => panic!("a change before InitDone"),
        }
    }
}

#[tokio::test]
async fn watcher_sees_changes_in_order() {
    let (_api, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut events = Events::spawn(watcher::watcher(cms.clone(), watcher::Config::default()));
    assert!(init(&mut events).await.is_empty());

    let cm: ConfigMap = serde_json::from_value(config_map("a")).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "1"}})),
        )
        .await
        .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    match next(&mut events).await.unwrap() {
        Event::Apply(o) => assert_eq!(o.resource_version(), created.resource_version()),
        other => panic!("expected the create, got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        Event::Apply(o) => {
            assert_eq!(o.resource_version(), patched.resource_version());
            assert_eq!(o.data.unwrap()["v"], "1");
        }
        other => panic!("expected the patch, got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        Event::Delete(o) => {
            assert_eq!(o.name_any(), "a");
            let del_rv: u64 = o.resource_version().unwrap().parse().unwrap();
            let patched_rv: u64 = patched.resource_version().unwrap().parse().unwrap();
            assert!(del_rv > patched_rv, "a delete has its own version");
        }
        other => panic!("expected the delete, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_restart() {
    let (api, client) = standin().await;
    for name in ["a", "b", "c"] {
        api.insert(service(name, "default")).unwrap();
    }
    let svcs: Api<Service> = Api::all(client);
    let (reader, writer) = reflector::store();
    let mut events = Events::spawn(reflector::reflector(
        writer,
        watcher::watcher(svcs, watcher::Config::default()),
    ));
    assert_eq!(init(&mut events).await, ["a", "b", "c"]);
    let lists_before = api.request_count("list", "services");
    wait_until("the watch is open", || async { api.open_watches() == 1 }).await;

    // While the watcher is cut off (no await between these, so it cannot run): a delete and a
    // create it never sees as events, then the history goes and the apiserver "restarts".
    api.delete(&ResourceId::services(), Some("default"), "b")
        .unwrap();
    api.insert(service("d", "default")).unwrap();
    api.compact();
    api.close_watches();

    // It resumes from its last version, gets 410, and relists.
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version: "),
                "{}",
                status.message
            );
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    assert_eq!(init(&mut events).await, ["a", "c", "d"]);
    let mut names: Vec<String> = reader.state().iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        ["a", "c", "d"],
        "the store converged, including the delete it missed"
    );
    assert!(api.request_count("list", "services") > lists_before);

    // And it goes on watching.
    api.insert(service("e", "default")).unwrap();
    match next(&mut events).await.unwrap() {
        Event::Apply(o) => assert_eq!(o.name_any(), "e"),
        other => panic!("expected e, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_resumes_after_restart_without_relisting() {
    let (api, client) = standin().await;
    api.insert(service("a", "default")).unwrap();
    api.insert(service("b", "default")).unwrap();
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let mut events = Events::spawn(watcher::watcher(svcs, watcher::Config::default()));
    assert_eq!(init(&mut events).await, ["a", "b"]);
    wait_until("the watch is open", || async { api.open_watches() == 1 }).await;
    let lists = api.request_count("list", "services");

    api.delete(&ResourceId::services(), Some("default"), "a")
        .unwrap();
    api.insert(service("c", "default")).unwrap();
    api.close_watches();

    // The missed changes arrive as events on the resumed watch, in order, without a relist.
    match next(&mut events).await.unwrap() {
        Event::Delete(o) => assert_eq!(o.name_any(), "a"),
        other => panic!("expected the delete of a, got {other:?}"),
    }
    match next(&mut events).await.unwrap() {
        Event::Apply(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("expected c, got {other:?}"),
    }
    assert_eq!(api.request_count("list", "services"), lists);
    assert!(api.request_count("watch", "services") >= 2);
}

#[tokio::test]
async fn streaming_list_watch() {
    let (api, client) = standin().await;
    api.insert_many((0..600).map(|i| service(&format!("svc-{i:04}"), "default")))
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let mut events = Events::spawn(watcher::watcher(
        svcs.clone(),
        watcher::Config::default().streaming_lists(),
    ));
    let names = init(&mut events).await;
    assert_eq!(names.len(), 600);
    assert_eq!(names[0], "svc-0000");
    assert_eq!(
        api.request_count("list", "services"),
        0,
        "a streaming list needs no LIST"
    );
    assert_eq!(api.request_count("watch", "services"), 1);

    svcs.patch(
        "svc-0001",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    match next(&mut events).await.unwrap() {
        Event::Apply(o) => assert_eq!(o.labels().get("x").map(String::as_str), Some("y")),
        other => panic!("expected the patch, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_arrive() {
    let (api, client) = standin_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    api.insert(service("a", "default")).unwrap();
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let mut stream = svcs
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Added(ref s) if s.name_any() == "a"),
        "{first:?}"
    );
    let current = api.resource_version().to_string();
    let bm = tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match bm {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, current);
            assert!(b.metadata.annotations.is_empty());
            assert_eq!(b.types.kind, "Service");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }

    // The streaming-list form: ADDED for each object, then the initial-events-end bookmark.
    let mut stream = svcs
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .unwrap()
        .boxed();
    let added = tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(added, WatchEvent::Added(_)));
    match tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
            assert_eq!(b.metadata.resource_version, current);
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_410() {
    let (api, client) = standin().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let old = api.resource_version();
    api.insert(service("a", "default")).unwrap();
    // Within the history: the change after `old` is replayed.
    let mut stream = svcs
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref s) if s.name_any() == "a"));
    drop(stream);

    api.compact();
    let floor = api.resource_version();
    let mut stream = svcs
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert_eq!(
                status.message,
                format!("too old resource version: {old} ({floor})")
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(PATIENCE, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the stream ends"
    );
    // A too-old history window has the same effect without compact().
    let (small, client) = standin_with(Options {
        history_window: 2,
        ..Options::default()
    })
    .await;
    let start = small.resource_version();
    for i in 0..3 {
        small.insert(service(&format!("s{i}"), "default")).unwrap();
    }
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let mut stream = svcs
        .watch(&WatchParams::default(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    // A version the store reaches while the watch waits for it: the watch starts there.
    let ahead = small.resource_version() + 1;
    let waiting = tokio::spawn({
        let svcs = svcs.clone();
        async move {
            svcs.watch(&WatchParams::default(), &ahead.to_string())
                .await
                .map(|s| s.boxed())
        }
    });
    wait_until("the watch request is waiting", || async {
        small.request_count("watch", "services") == 2
    })
    .await;
    small.insert(service("s3", "default")).unwrap();
    small.insert(service("s4", "default")).unwrap();
    let mut stream = waiting.await.unwrap().unwrap();
    match tokio::time::timeout(PATIENCE, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(s) => assert_eq!(
            s.name_any(),
            "s4",
            "the change at the version itself is not replayed"
        ),
        other => panic!("expected s4, got {other:?}"),
    }
    // A version it never reaches: 504 after the server's wait (kube-rs would retry it).
    let impatient: Api<Service> =
        Api::namespaced(common::client_without_retry(&small).await, "default");
    let e = api_error(
        impatient
            .watch(&WatchParams::default(), "999999")
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));
}

#[tokio::test]
async fn selectors_on_watches_follow_objects_in_and_out() {
    let (_api, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut labelled: serde_json::Value = config_map("x");
    labelled["metadata"]["labels"] = json!({"app": "web"});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(labelled).unwrap(),
    )
    .await
    .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("app=web"), "0")
        .await
        .unwrap()
        .boxed();
    let mut next_event = async || {
        tokio::time::timeout(PATIENCE, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next_event().await, WatchEvent::Added(_)));
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    match next_event().await {
        // Left the selection: DELETED with the content it had.
        WatchEvent::Deleted(o) => assert_eq!(o.labels()["app"], "web"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    match next_event().await {
        WatchEvent::Added(o) => assert_eq!(o.data.unwrap()["v"], "2"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_watcher() {
    let (api, client) = standin().await;
    api.insert(service("a", "default")).unwrap();
    let svcs: Api<PartialObjectMeta<Service>> = Api::namespaced(client, "default");
    let mut events = watcher::watcher(svcs, watcher::Config::default()).boxed();
    let first = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::InitApply(o) = events.next().await.unwrap().unwrap() {
                return o;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first.name_any(), "a");
    assert!(first.metadata.uid.is_some());
}
