//! The size Sluice's reconciler tests need: 10 000 Services and 10 000 EndpointSlices with
//! reflectors on both, full and paged lists, and 10 000 sequential status patches through
//! kube-rs that the Service reflector all sees. Asserts behaviour only; the elapsed times are
//! printed (run with `--nocapture`) for information.

mod common;

use std::time::Instant;

use common::{standin, wait_until};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

const N: usize = 10_000;

/// A LoadBalancer Service without node ports: the node port range (30000-32767) holds only
/// 2768, so 10 000 LoadBalancer Services with node ports cannot exist, here as in a cluster.
fn service(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i:05}"), "namespace": "default", "labels": {"app": format!("app-{}", i % 100)}},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "selector": {"app": format!("app-{}", i % 100)}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

fn slice(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i:05}-abcde"), "namespace": "default", "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn ingress_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_and_slices() {
    let (api, client) = standin().await;
    let t = Instant::now();
    assert_eq!(api.insert_many((0..N).map(service)).unwrap(), N);
    assert_eq!(api.insert_many((0..N).map(slice)).unwrap(), N);
    println!("seeded {} objects in {:?}", 2 * N, t.elapsed());

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let (svc_store, svc_writer) = reflector::store();
    let (slice_store, slice_writer) = reflector::store();
    let t = Instant::now();
    // With back-off, as a controller runs them, and stopped before the server is: a watcher
    // that retries at once spins on "connection refused" once the server has gone.
    let reflectors = [
        tokio::spawn(
            watcher::watcher(svcs.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(svc_writer)
                .for_each(|_| async {}),
        ),
        tokio::spawn(
            watcher::watcher(slices.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(slice_writer)
                .for_each(|_| async {}),
        ),
    ];
    svc_store.wait_until_ready().await.unwrap();
    slice_store.wait_until_ready().await.unwrap();
    assert_eq!(svc_store.state().len(), N);
    assert_eq!(slice_store.state().len(), N);
    println!("two reflectors synced in {:?}", t.elapsed());
    // The watchers paged their initial LISTs (500 a page).
    assert!(api.request_count("list", "services") >= 20);
    assert!(api.request_count("list", "endpointslices.discovery.k8s.io") >= 20);

    let t = Instant::now();
    let all = svcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), N);
    let selected = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=svc-04242"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    println!(
        "listed {N} services and a selected slice in {:?}",
        t.elapsed()
    );

    api.reset_request_counts();
    let t = Instant::now();
    let pp = PatchParams::default();
    for i in 0..N {
        let ip = format!("192.0.{}.{}", 2 + i / 250, i % 250 + 1);
        let patch = Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}));
        svcs.patch_status(&format!("svc-{i:05}"), &pp, &patch)
            .await
            .unwrap();
    }
    println!("{N} sequential status patches in {:?}", t.elapsed());
    assert_eq!(
        api.request_count("patch", "services/status"),
        u64::try_from(N).unwrap()
    );
    wait_until("the reflector saw every status", || async {
        svc_store
            .state()
            .iter()
            .filter(|s| ingress_ip(s).is_some())
            .count()
            == N
    })
    .await;
    println!(
        "reflector caught up {:?} after the first patch",
        t.elapsed()
    );
    let s = svc_store
        .get(&reflector::ObjectRef::new("svc-09999").within("default"))
        .unwrap();
    assert_eq!(ingress_ip(&s).as_deref(), Some("192.0.41.250"));
    assert_eq!(slice_store.state().len(), N);
    for task in reflectors {
        task.abort();
    }
    api.shutdown().await;
}
