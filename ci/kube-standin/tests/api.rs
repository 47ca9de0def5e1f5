//! The stand-in's REST semantics, driven only through kube-rs (the client the reconciler uses):
//! create/get/list/replace/patch/delete, optimistic concurrency, the status subresource,
//! selectors, pagination, namespaces, finalizers and the error statuses.

mod common;

use std::collections::BTreeSet;

use common::{api_error, standin};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::ResourceExt;
use serde_json::{Value, json};
use sluice_kube_standin::ResourceId;

fn lb_service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    }))
    .unwrap()
}

fn rv(o: &impl ResourceExt) -> u64 {
    o.resource_version().unwrap().parse().unwrap()
}

#[tokio::test]
async fn service_crud() {
    let (_api, client) = standin().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");

    let created = svcs
        .create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();
    assert!(
        created
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    let spec = created.spec.clone().unwrap();
    // Defaults and allocations.
    assert!(spec.cluster_ip.as_deref().unwrap().starts_with("10.9"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let ports = spec.ports.unwrap();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert!(
        ports
            .iter()
            .all(|p| p.node_port.is_some_and(|n| (30000..=32767).contains(&n)))
    );
    // The status subresource: a create does not set status.
    let ingress = created
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone());
    assert_eq!(ingress, None);

    let got = svcs.get("web").await.unwrap();
    assert_eq!(got, created);
    let list = svcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&created)
    );

    // Replace with the version read: accepted, spec change bumps the generation.
    let mut edited = got.clone();
    edited.spec.as_mut().unwrap().selector = Some([("app".to_string(), "web2".to_string())].into());
    let replaced = svcs
        .replace("web", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.spec.as_ref().unwrap().cluster_ip,
        spec.cluster_ip,
        "allocations are kept"
    );
    // Replace with the stale version: 409.
    let e = api_error(
        svcs.replace("web", &PostParams::default(), &edited)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on services \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Merge patch of metadata: new version, same generation.
    let merged = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.labels().get("tier").map(String::as_str),
        Some("edge")
    );
    assert_eq!(merged.metadata.generation, Some(2));
    assert!(rv(&merged) > rv(&replaced));
    // The same patch again changes nothing: no new version.
    let again = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&merged));

    // JSON patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/ports/0/port", "value": 80},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 81}
    ]))
    .unwrap();
    let jp = svcs
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(
        jp.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        81
    );
    assert_eq!(jp.metadata.generation, Some(3));
    // A failing JSON patch operation is 422.
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/type", "value": "NodePort"}]))
            .unwrap();
    let e = api_error(
        svcs.patch("web", &PatchParams::default(), &Patch::Json::<()>(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);

    // Strategic merge patch (treated as a merge patch).
    let smp = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(smp.annotations().get("a").map(String::as_str), Some("b"));

    // Server-side apply: on an existing object, and creating a new one.
    let pp = PatchParams::apply("sluice-control");
    let applied = svcs
        .patch(
            "web",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "annotations": {"sluice.io/mode": "dsr"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied
            .annotations()
            .get("sluice.io/mode")
            .map(String::as_str),
        Some("dsr")
    );
    let fresh = svcs
        .patch("api", &pp, &Patch::Apply(lb_service("api")))
        .await
        .unwrap();
    assert_eq!(fresh.metadata.generation, Some(1));
    assert!(svcs.get("api").await.is_ok());
    // Apply to an absent object's status is 404.
    let e = api_error(
        svcs.patch_status("nope", &pp, &Patch::Apply(lb_service("nope")))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);

    // Duplicate create.
    let e = api_error(
        svcs.create(&PostParams::default(), &lb_service("web"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "services \"web\" already exists");

    // Delete returns the object; then it is gone.
    let deleted = svcs.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        deleted.left().map(|s| s.name_any()),
        Some("web".to_string())
    );
    let e = api_error(svcs.get("web").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "services \"web\" not found")
    );
    let e = api_error(
        svcs.delete("web", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn endpoint_slice_crud_and_selectors() {
    let (_api, client) = standin().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let slice = |name: &str, svc: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080}]
        }))
        .unwrap()
    };
    let a = slices
        .create(&PostParams::default(), &slice("web-abc", "web"))
        .await
        .unwrap();
    slices
        .create(&PostParams::default(), &slice("web-def", "web"))
        .await
        .unwrap();
    slices
        .create(&PostParams::default(), &slice("db-xyz", "db"))
        .await
        .unwrap();
    // Port defaults.
    let port = &a.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.protocol.as_deref(), port.name.as_deref()),
        (Some("TCP"), Some(""))
    );

    let web = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    let names: Vec<String> = web.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["web-abc", "web-def"]);
    let not_web = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name notin (web)"))
        .await
        .unwrap();
    assert_eq!(not_web.items.len(), 1);
    let by_field = slices
        .list(&ListParams::default().fields("metadata.name=db-xyz"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);

    // Replace the endpoints; addressType is immutable.
    let mut b = slices.get("web-abc").await.unwrap();
    b.endpoints[0].addresses = vec!["10.0.0.2".into()];
    let b = slices
        .replace("web-abc", &PostParams::default(), &b)
        .await
        .unwrap();
    assert_eq!(b.endpoints[0].addresses, ["10.0.0.2"]);
    let mut c = b.clone();
    c.address_type = "IPv6".into();
    let e = api_error(
        slices
            .replace("web-abc", &PostParams::default(), &c)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("EndpointSlice.discovery.k8s.io \"web-abc\" is invalid: addressType"),
        "{}",
        e.message
    );

    slices
        .delete("web-abc", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        slices
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Delete a collection by selector.
    slices
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("kubernetes.io/service-name=web"),
        )
        .await
        .unwrap();
    let left: Vec<String> = slices
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(left, ["db-xyz"]);
}

#[tokio::test]
async fn label_selectors_equality_and_sets() {
    let (api, client) = standin().await;
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "edge"})),
        ("b", json!({"app": "web", "tier": "core"})),
        ("c", json!({"app": "db"})),
        ("d", json!({"app": "db", "canary": "true"})),
    ] {
        api.insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels}
        }))
        .unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    assert_eq!(names("app=web").await, "a,b");
    assert_eq!(names("app==db").await, "c,d");
    assert_eq!(names("tier!=edge").await, "b,c,d");
    assert_eq!(names("tier in (edge,core)").await, "a,b");
    assert_eq!(names("tier notin (edge)").await, "b,c,d");
    assert_eq!(names("canary").await, "d");
    assert_eq!(names("!canary,app=db").await, "c");
    assert_eq!(names("app=web,tier!=core").await, "a");
    assert_eq!(names("app in (web, db),!tier").await, "c,d");
    let e = api_error(
        cms.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let e = api_error(
        cms.list(&ListParams::default().fields("data.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: data.x")
    );
}

#[tokio::test]
async fn lease_optimistic_concurrency() {
    let (_api, client) = standin().await;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "sluice-allocator"},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();

    // Two contenders read the same version; exactly one wins.
    let mut a = leases.get("sluice-allocator").await.unwrap();
    let mut b = leases.get("sluice-allocator").await.unwrap();
    a.spec.as_mut().unwrap().holder_identity = Some("node-a".into());
    b.spec.as_mut().unwrap().holder_identity = Some("node-b".into());
    let won = leases
        .replace("sluice-allocator", &PostParams::default(), &a)
        .await;
    let lost = leases
        .replace("sluice-allocator", &PostParams::default(), &b)
        .await;
    assert!(won.is_ok());
    let e = api_error(lost.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"sluice-allocator\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let holder = leases
        .get("sluice-allocator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("node-a"));

    // Many writers doing read-modify-write with retries: no increment is lost.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let leases = leases.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let mut l = leases.get("sluice-allocator").await.unwrap();
                    let spec = l.spec.as_mut().unwrap();
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    match leases
                        .replace("sluice-allocator", &PostParams::default(), &l)
                        .await
                    {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let transitions = leases
        .get("sluice-allocator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions;
    assert_eq!(transitions, Some(30));

    // A create carrying a resourceVersion is refused as the real server does.
    let mut copy = leases.get("sluice-allocator").await.unwrap();
    copy.metadata.name = Some("other".into());
    let e = api_error(
        leases
            .create(&PostParams::default(), &copy)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            500,
            "resourceVersion should not be set on objects to be created"
        )
    );
}

fn pool_resource(group: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, "IPAddressPool"),
        "ipaddresspools",
    )
}

#[tokio::test]
async fn custom_resources_through_dynamic_objects() {
    let (api, client) = standin().await;
    let metallb_v1b1 = pool_resource("metallb.io", "v1beta1");
    let pools: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "kube-system", &metallb_v1b1);
    let mut pool = DynamicObject::new("public", &metallb_v1b1);
    pool.data = json!({"spec": {"addresses": ["192.0.2.0/24"]}, "status": {"assignedIPv4": 5}});
    let created = pools.create(&PostParams::default(), &pool).await.unwrap();
    assert_eq!(created.data["spec"]["addresses"][0], "192.0.2.0/24");
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    // A second group with the same plural is a different resource.
    let sluice = pool_resource("sluice.io", "v1beta1");
    let sluice_pools: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "kube-system", &sluice);
    assert!(
        sluice_pools
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut own = DynamicObject::new("public", &sluice);
    own.data = json!({"spec": {"addresses": ["198.51.100.0/24"]}});
    sluice_pools
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    assert_eq!(
        pools
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Status subresource.
    let st = pools
        .patch_status(
            "public",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"assignedIPv4": 3}, "spec": {"addresses": []}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["assignedIPv4"], 3);
    assert_eq!(
        st.data["spec"]["addresses"][0], "192.0.2.0/24",
        "a status write leaves spec alone"
    );
    assert_eq!(st.metadata.generation, Some(1));
    let main = pools
        .patch(
            "public",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"assignedIPv4": 99}, "spec": {"avoidBuggyIPs": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.data["status"]["assignedIPv4"], 3,
        "a main-resource write leaves status alone"
    );
    assert_eq!(main.metadata.generation, Some(2));

    // Read through another version: same object, that version's apiVersion.
    let v1b2 = pool_resource("metallb.io", "v1beta2");
    let pools_v1b2: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kube-system", &v1b2);
    let other = pools_v1b2.get("public").await.unwrap();
    assert_eq!(other.types.unwrap().api_version, "metallb.io/v1beta2");
    assert_eq!(other.metadata.uid, main.metadata.uid);
    // List items of custom resources keep their type meta.
    let listed = pools.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("IPAddressPool")
    );

    // Apply (create and update) and the patch types custom resources do not take.
    let pp = PatchParams::apply("sluice-control").force();
    let applied = pools
        .patch(
            "private",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "private"}, "spec": {"addresses": ["10.10.0.0/16"]}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["addresses"][0], "10.10.0.0/16");
    let e = api_error(
        pools
            .patch(
                "private",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));

    // A cluster-scoped custom resource is fixed by its first write.
    let bgp = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sluice.io", "v1beta1", "NodeState"),
        "nodestates",
    );
    let states: Api<DynamicObject> = Api::all_with(client.clone(), &bgp);
    let mut s = DynamicObject::new("node-1", &bgp);
    s.data = json!({"spec": {"up": true}});
    states.create(&PostParams::default(), &s).await.unwrap();
    let in_ns: Api<DynamicObject> = Api::namespaced_with(client, "default", &bgp);
    let e = api_error(in_ns.get("node-1").await.unwrap_err());
    assert_eq!(e.code, 404);

    let stored = api
        .get(
            &ResourceId::new("metallb.io", "ipaddresspools"),
            Some("kube-system"),
            "public",
        )
        .unwrap();
    assert_eq!(stored["spec"]["avoidBuggyIPs"], true);
    pools
        .delete("public", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        api.get(
            &ResourceId::new("metallb.io", "ipaddresspools"),
            Some("kube-system"),
            "public"
        )
        .is_none()
    );
}

#[tokio::test]
async fn status_subresource_separation() {
    let (api, client) = standin().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let created = svcs
        .create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();

    // patch_status changes only status, even when the patch carries spec.
    let st = svcs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
    let ip = |s: &Service| {
        s.status
            .as_ref()?
            .load_balancer
            .as_ref()?
            .ingress
            .as_ref()?[0]
            .ip
            .clone()
    };
    assert_eq!(ip(&st).as_deref(), Some("192.0.2.10"));
    assert!(rv(&st) > rv(&created));
    assert_eq!(st.metadata.generation, Some(1));

    // A main-resource patch cannot change status.
    let main = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ip(&main).as_deref(), Some("192.0.2.10"));

    // replace_status with a stale version is a conflict; with the current one it applies.
    let mut stale = created.clone();
    stale.status = st.status.clone();
    let e = api_error(
        svcs.replace_status("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    let mut cur = svcs.get_status("web").await.unwrap();
    cur.status
        .as_mut()
        .unwrap()
        .load_balancer
        .as_mut()
        .unwrap()
        .ingress
        .as_mut()
        .unwrap()[0]
        .ip = Some("192.0.2.11".into());
    cur.metadata.labels = Some([("ignored".to_string(), "yes".to_string())].into());
    let done = svcs
        .replace_status("web", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(ip(&done).as_deref(), Some("192.0.2.11"));
    assert!(
        !done.labels().contains_key("ignored"),
        "a status write changes only status"
    );

    // Status patches are counted per subresource.
    assert_eq!(api.request_count("patch", "services/status"), 1);
    assert_eq!(api.request_count("update", "services/status"), 2);
    assert_eq!(api.request_count("patch", "services"), 1);
}

#[tokio::test]
async fn pagination_is_a_consistent_snapshot() {
    let (api, client) = standin().await;
    api.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}))
        .unwrap();
    let objs = (0..1234).map(|i| {
        let ns = if i % 2 == 0 { "default" } else { "team-b" };
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:05}"), "namespace": ns, "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}},
            "data": {"i": i.to_string()}
        })
    });
    assert_eq!(api.insert_many(objs).unwrap(), 1234);
    let all: Api<ConfigMap> = Api::all(client.clone());

    let first = all.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(first.items.len(), 500);
    assert_eq!(first.metadata.remaining_item_count, Some(734));
    let snapshot_rv = first.metadata.resource_version.clone().unwrap();
    // Writes after the first page do not show in the later pages.
    let team_b: Api<ConfigMap> = Api::namespaced(client.clone(), "team-b");
    team_b
        .delete("cm-01233", &DeleteParams::default())
        .await
        .unwrap();
    team_b
        .patch(
            "cm-01231",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": "changed"}})),
        )
        .await
        .unwrap();
    let mut names: Vec<String> = first.items.iter().map(ResourceExt::name_any).collect();
    let mut token = first.metadata.continue_;
    let mut pages = 1;
    let mut seen_1231 = None;
    while let Some(t) = token {
        let page = all
            .list(&ListParams::default().limit(500).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_ref(), Some(&snapshot_rv));
        for cm in &page.items {
            if cm.name_any() == "cm-01231" {
                seen_1231 = cm.data.as_ref().and_then(|d| d.get("i").cloned());
            }
        }
        names.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_;
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 1234);
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>().len(),
        1234,
        "no duplicates"
    );
    assert!(
        names.contains(&"cm-01233".to_string()),
        "deleted after the snapshot: still listed"
    );
    assert_eq!(
        seen_1231.as_deref(),
        Some("1231"),
        "modified after the snapshot: old content"
    );
    // Keys sort by namespace, then name, as etcd does.
    assert!(
        names[..617]
            .iter()
            .all(|n| n.ends_with(['0', '2', '4', '6', '8']))
    );

    // A fresh list sees the current state.
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1233
    );
    // Paging with a selector.
    let odd = team_b
        .list(&ListParams::default().labels("parity=odd").limit(300))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 300);
    assert_eq!(
        odd.metadata.remaining_item_count, None,
        "not reported with selectors"
    );
    // After a compaction an old continue token is 410.
    let t = odd.metadata.continue_.unwrap();
    team_b
        .delete("cm-00001", &DeleteParams::default())
        .await
        .unwrap();
    api.compact();
    let e = api_error(
        team_b
            .list(
                &ListParams::default()
                    .labels("parity=odd")
                    .limit(300)
                    .continue_token(&t),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    // Exact reads at an old version after compaction are 410 too.
    let e = api_error(
        all.list(
            &ListParams::default()
                .at(&snapshot_rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 410);
}

#[tokio::test]
async fn namespaces_exist_before_their_objects() {
    let (api, client) = standin().await;
    let missing: Api<Service> = Api::namespaced(client.clone(), "nope");
    let e = api_error(
        missing
            .create(&PostParams::default(), &lb_service("web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "namespaces \"nope\" not found")
    );

    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["default", "kube-system"]);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "nope"}})).unwrap();
    let ns = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    missing
        .create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["sluice.io/cleanup"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();

    // Deleting the namespace deletes its content; a finalizer keeps it Terminating.
    let terminating = nss
        .delete("nope", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert_eq!(api.request_count("delete", "namespaces"), 1);
    let e = api_error(missing.get("web").await.unwrap_err());
    assert_eq!(e.code, 404);
    let e = api_error(
        missing
            .create(&PostParams::default(), &lb_service("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(nss.get("nope").await.is_ok());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let e = api_error(nss.get("nope").await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let (_api, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "guarded", "finalizers": ["sluice.io/release"]}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let marked = cms
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let still = cms.get("guarded").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    let again = cms
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.resource_version(), still.resource_version());
    // No new finalizers while deleting.
    let e = api_error(
        cms.patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["sluice.io/release", "x.io/more"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    // Other updates are fine; emptying the finalizers deletes it.
    cms.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    let e = api_error(cms.get("guarded").await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn errors_are_status_objects() {
    let (api, client) = standin().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    svcs.create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();

    // Name in the body and the URL disagree.
    let mut other = svcs.get("web").await.unwrap();
    other.metadata.name = Some("other".into());
    let e = api_error(
        svcs.replace("web", &PostParams::default(), &other)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            400,
            "BadRequest",
            "the name of the object (other) does not match the name on the URL (web)"
        )
    );
    let mut moved = svcs.get("web").await.unwrap();
    moved.metadata.namespace = Some("kube-system".into());
    let e = api_error(
        svcs.replace("web", &PostParams::default(), &moved)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    // A replace of an absent object.
    let e = api_error(
        svcs.replace("absent", &PostParams::default(), &lb_service("absent"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    // Invalid objects.
    let e = api_error(
        svcs.create(&PostParams::default(), &lb_service("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(
            "Service \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        e.message
    );
    let no_ports: Service =
        serde_json::from_value(json!({"metadata": {"name": "np"}, "spec": {"type": "ClusterIP"}}))
            .unwrap();
    let e = api_error(
        svcs.create(&PostParams::default(), &no_ports)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Service \"np\" is invalid: spec.ports: Required value"
    );
    // generateName.
    let mut generated = lb_service("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("web-".into());
    let g = svcs
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.name_any().starts_with("web-") && g.name_any().len() == 9);

    // Raw requests for what kube-rs' typed API will not send.
    let raw = |method: &str, path: &str, ct: &str, body: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let status = |r: Result<Value, kube::Error>| api_error(r.unwrap_err());
    let path = "/api/v1/namespaces/default/services/web";
    let e = status(
        client
            .request::<Value>(raw("PATCH", path, "text/plain", "{}"))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    let e = status(
        client
            .request::<Value>(raw("PATCH", path, "application/apply-patch+yaml", "{}"))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.contains("fieldManager: Required value"),
        "{}",
        e.message
    );
    let e = status(
        client
            .request::<Value>(raw(
                "POST",
                "/api/v1/namespaces/default/services",
                "application/json",
                "{nope",
            ))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let e = status(
        client
            .request::<Value>(raw(
                "GET",
                "/api/v1/namespaces/default/services?watch=1&resourceVersionMatch=Exact",
                "application/json",
                "",
            ))
            .await,
    );
    assert_eq!(e.code, 422);
    // A version the store has not reached: 504 after the server's wait (kube-rs would retry it).
    let impatient = common::client_without_retry(&api).await;
    let e = status(impatient.request::<Value>(raw("GET", "/api/v1/namespaces/default/services?resourceVersion=999999&resourceVersionMatch=NotOlderThan", "application/json", "")).await);
    assert_eq!((e.code, e.reason.as_str()), (504, "Timeout"));
    assert!(
        e.message
            .starts_with("Timeout: Too large resource version: 999999, current: "),
        "{}",
        e.message
    );
    let e = status(
        client
            .request::<Value>(raw(
                "GET",
                "/api/v1/namespaces/default/services/web/scale",
                "application/json",
                "",
            ))
            .await,
    );
    assert_eq!(e.code, 404);
    // Metadata-only reads.
    let meta = svcs.get_metadata("web").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("web"));
    // /version.
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    assert!(api.request_count("create", "services") >= 4);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let (api, client) = standin().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let before = api.resource_version();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let out = svcs.create(&pp, &lb_service("ghost")).await.unwrap();
    assert_eq!(out.name_any(), "ghost");
    assert_eq!(api.resource_version(), before);
    assert!(
        api.get(&ResourceId::services(), Some("default"), "ghost")
            .is_none()
    );
    assert!(api.list(&ResourceId::services(), None).is_empty());
}

#[tokio::test]
async fn kube_runtime_finalizer_helper() {
    use std::sync::Arc;

    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};

    let (_api, client) = standin().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "tracked"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let run = |obj: ConfigMap| {
        let cms = cms.clone();
        async move {
            finalizer(&cms, "sluice.io/cleanup", Arc::new(obj), |ev| async move {
                let what = match ev {
                    Finalizer::Apply(_) => "apply",
                    Finalizer::Cleanup(_) => "cleanup",
                };
                println!("finalizer event: {what}");
                Ok::<_, kube::Error>(Action::await_change())
            })
            .await
            .map_err(|e| e.to_string())
        }
    };
    // First pass adds the finalizer (a JSON patch testing /metadata/finalizers for null).
    run(cms.get("tracked").await.unwrap()).await.unwrap();
    assert_eq!(
        cms.get("tracked").await.unwrap().finalizers(),
        ["sluice.io/cleanup"]
    );
    run(cms.get("tracked").await.unwrap()).await.unwrap();
    // Delete: the object stays until cleanup removes the finalizer.
    cms.delete("tracked", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = cms.get("tracked").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    run(deleting).await.unwrap();
    let e = api_error(cms.get("tracked").await.unwrap_err());
    assert_eq!(e.code, 404);
}

/// Every verb once on one kind: create, get, list, replace, merge/JSON/apply patches, delete.
async fn every_verb<K>(api: &Api<K>, obj: K, apply_body: Value)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let v1 = rv(&created);
    assert_eq!(api.get(&name).await.unwrap().meta().uid, created.meta().uid);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let mut edited = created.clone();
    edited.meta_mut().labels = Some([("step".to_string(), "replace".to_string())].into());
    let replaced = api
        .replace(&name, &PostParams::default(), &edited)
        .await
        .unwrap();
    let v2 = rv(&replaced);
    assert!(v2 > v1);

    let merged = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"step": "merge"}}})),
        )
        .await
        .unwrap();
    let v3 = rv(&merged);
    assert!(v3 > v2);
    assert_eq!(merged.labels()["step"], "merge");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/step", "value": "merge"},
        {"op": "add", "path": "/metadata/annotations", "value": {"json": "patch"}}
    ]))
    .unwrap();
    let jsoned = api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    let v4 = rv(&jsoned);
    assert!(v4 > v3);
    assert_eq!(jsoned.annotations()["json"], "patch");

    let applied = api
        .patch(
            &name,
            &PatchParams::apply("sluice-control"),
            &Patch::Apply(apply_body),
        )
        .await
        .unwrap();
    assert!(rv(&applied) > v4);
    assert_eq!(applied.annotations()["applied"], "yes");
    assert_eq!(
        applied.annotations()["json"],
        "patch",
        "apply keeps what it does not mention"
    );

    // A patch carrying a stale resourceVersion is refused.
    let stale =
        json!({"metadata": {"resourceVersion": v1.to_string(), "labels": {"step": "stale"}}});
    let e = api_error(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(api.get(&name).await.unwrap_err()).code, 404);
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn every_verb_for_every_kind() {
    let (_api, client) = standin().await;
    let apply = |api_version: &str, kind: &str, name: &str| json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "annotations": {"applied": "yes"}}});
    every_verb(
        &Api::<Service>::namespaced(client.clone(), "default"),
        lb_service("web"),
        apply("v1", "Service", "web"),
    )
    .await;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-x"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]
    }))
    .unwrap();
    every_verb(
        &Api::<EndpointSlice>::namespaced(client.clone(), "default"),
        slice,
        apply("discovery.k8s.io/v1", "EndpointSlice", "web-x"),
    )
    .await;
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    every_verb(
        &Api::<Lease>::namespaced(client.clone(), "kube-system"),
        lease,
        apply("coordination.k8s.io/v1", "Lease", "leader"),
    )
    .await;
    let ar = pool_resource("metallb.io", "v1beta1");
    let mut pool = DynamicObject::new("public", &ar);
    pool.data = json!({"spec": {"addresses": ["192.0.2.0/24"]}});
    every_verb(
        &Api::<DynamicObject>::namespaced_with(client, "default", &ar),
        pool,
        apply("metallb.io/v1beta1", "IPAddressPool", "public"),
    )
    .await;
}
