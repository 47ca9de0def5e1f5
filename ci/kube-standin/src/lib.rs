//! A Kubernetes API stand-in for tests: an HTTP server that speaks the apiserver's REST API
//! with its real semantics over an in-memory store, for testing Sluice's reconciler through
//! kube-rs where no kube-apiserver can run.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let api = sluice_kube_standin::start(sluice_kube_standin::Options::default()).await?;
//! api.write_kubeconfig("/tmp/kubeconfig")?;
//! // kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &Default::default())
//! # Ok(()) }
//! ```
//!
//! The binary `sluice-kube-standin --listen ADDR --kubeconfig PATH` serves the same and prints
//! `sluice-kube-standin ready on http://…` when it is listening; it runs until SIGTERM/SIGINT.
//!
//! # Guarantees (what is faithful)
//!
//! **Paths.** `/api/v1/…` and `/apis/{group}/{version}/…`; namespaced
//! `namespaces/{ns}/{plural}[/{name}[/status]]`, cluster-scoped `{plural}[/{name}[/status]]`,
//! and the all-namespaces list/watch of a namespaced resource (`/api/v1/services`). Any group,
//! version and plural is served: objects are stored per (group, plural, namespace, name)
//! whatever the version, and are returned with the `apiVersion` of the path they are read
//! through (a CRD served at several versions, no conversion). Namespaces and Nodes (and the
//! other built-in cluster-scoped kinds in `resource::BUILTINS`) are cluster-scoped; a resource
//! the stand-in does not know (a custom resource) takes the scope of the first path that writes
//! it, and a path of the other scope then gets 404. Namespaces `default` and `kube-system` exist
//! from the start; creating in a missing namespace is `404 namespaces "x" not found`, in a
//! terminating one `403 Forbidden`. `/version`, `/healthz`, `/readyz`, `/livez` answer.
//!
//! **Versions.** One global `resourceVersion` counter, as etcd's revision: every committed
//! write increments it by one (a decimal string in `metadata.resourceVersion`). An update that
//! changes nothing writes nothing (same version, no watch event), as the real server. The
//! server sets `metadata.uid`, `creationTimestamp` (whole seconds, UTC) and `generation` (1 on
//! create, +1 when anything outside `metadata` and `status` changes).
//!
//! **Reads.** GET; LIST (`<Kind>List`, `metadata.resourceVersion` = the version read) with
//! `labelSelector` (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`,
//! `a<1`), `fieldSelector` (`metadata.name`, `metadata.namespace` for everything; a few more
//! for Events, Pods, Nodes, Namespaces, Secrets; any other field is `400 field label not
//! supported`), and `limit` + `continue` pagination where **every page is read at the version
//! of the first** (a consistent snapshot, as etcd serves it), with `remainingItemCount` when
//! there is no selector, and `410 Expired` once that version left the history. The
//! `resourceVersion`/`resourceVersionMatch` rules of the docs: none → most recent; `"0"` → any
//! (served as most recent, and `limit` is ignored like the watch cache does); `N` with
//! `NotOlderThan` → most recent once the store reached `N`; `N` with `Exact` (or with `limit`
//! and no match) → the state at `N`; `N` newer than the store → waits up to 3 s, then
//! `504 Timeout "Too large resource version"`. Invalid combinations are `422`.
//! `Accept: …;as=PartialObjectMetadata` answers metadata only (kube-rs' metadata watchers).
//! Lists of built-in resources omit their items' `kind`/`apiVersion`, as the real server does;
//! lists of custom resources keep them.
//!
//! **Watches.** `watch=true|1` (or the `/watch/` prefix, or `…/{name}?watch=true`),
//! newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`:
//! - `resourceVersion` absent or `"0"`: synthetic `ADDED` for every current object, then
//!   changes; `N`: every change after `N`, in order; a version older than the history window
//!   (or than a [`Handle::compact`]) → one `ERROR` event with a `Status` `410 Expired "too old
//!   resource version: N (F)"` (F = the oldest version no longer kept), then the stream ends —
//!   HTTP 200, exactly what the watch cache answers;
//! - `sendInitialEvents=true` + `resourceVersionMatch=NotOlderThan` (+ the required
//!   `allowWatchBookmarks=true`): the streaming list — `ADDED` for each current object, then a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`, then changes;
//! - `allowWatchBookmarks=true`: a `BOOKMARK` (only `kind`, `apiVersion` and
//!   `metadata.resourceVersion`) every [`Options::bookmark_interval`]; its version is one up to
//!   which every matching change has been sent;
//! - selectors apply to changes as in the watch cache: an object modified into the selection
//!   arrives as `ADDED`, one modified out of it as `DELETED` (its previous content at the new
//!   version);
//! - `timeoutSeconds` ends the stream; [`Handle::close_watches`] ends every stream (an
//!   apiserver restart); a watcher whose client reads so slowly that the history no longer
//!   reaches its position gets the `410` event — writers never wait for watchers.
//!
//! **Writes.** POST (201; `409 AlreadyExists`; `generateName`; a `resourceVersion` in the body
//! is `500 "resourceVersion should not be set on objects to be created"` like the real
//! server); PUT (a stale `metadata.resourceVersion` → `409 Conflict "…the object has been
//! modified; please apply your changes to the latest version and try again"`, absent → `404`
//! except for Events and Endpoints, which PUT may create; a `metadata.uid` that differs → 409);
//! PATCH as `application/merge-patch+json` (RFC 7386), `application/json-patch+json` (RFC 6902;
//! a failing operation is 422), `application/strategic-merge-patch+json` (built-in resources
//! only — custom resources answer 415, as the real server) and `application/apply-patch+yaml`
//! (`fieldManager` required, `force` only there); a patch that sets `metadata.resourceVersion`
//! is a precondition. Any other patch type is `415`. DELETE returns the object (200); with
//! finalizers it only sets `deletionTimestamp` (and `deletionGracePeriodSeconds: 0`), no new
//! finalizer may then be added (422), and the object goes (`DELETED`) when an update empties
//! `metadata.finalizers`; `DeleteOptions.preconditions` (uid, resourceVersion) are honoured.
//! DELETE on a collection deletes what its selectors select. `dryRun` runs every check and
//! writes nothing. Deleting a namespace marks it `Terminating`, deletes everything in it
//! (finalizers honoured) and removes it once it is empty.
//!
//! **Status subresource.** Services, Nodes, Namespaces, Pods (and the built-in workload kinds)
//! and every custom resource have one: a write to the main resource keeps the stored `status`,
//! a write to `/status` changes only `status`; both bump the version and notify watchers.
//! Status is dropped on create (Services get `{loadBalancer: {}}`, Namespaces `phase: Active`,
//! Pods `phase: Pending`; Nodes keep theirs, as the kubelet registers them). EndpointSlices,
//! Leases, Events, ConfigMaps have none. Leases get no special treatment: their optimistic
//! concurrency is the generic one, which is exact.
//!
//! **Defaults and validation** (see `strategy`): object names (DNS-1123 subdomain; DNS-1035
//! label for Services, DNS-1123 label for Namespaces), label keys and values, annotation keys,
//! finalizer names; Services get the real defaults, a cluster IP from `10.96.0.0/12` and node
//! ports from `30000-32767` for `NodePort`/`LoadBalancer` (requested ones checked), keep them
//! across updates that omit them, and are validated (ports, type, `loadBalancerClass` only with
//! `LoadBalancer` and immutable); EndpointSlice ports default to `protocol: TCP`, `name: ""`,
//! and `addressType` is required and immutable. A body whose name or namespace disagrees with
//! the path is `400 BadRequest` ("the name of the object (x) does not match the name on the URL
//! (y)"), as the real server answers it.
//!
//! **Errors** are `Status` objects (`kind: Status`, `apiVersion: v1`, `status: Failure`,
//! `message`, `reason`, `details`, `code`) with the HTTP code and the real messages for 400,
//! 403, 404, 405, 409, 410, 415, 422, 500 and 504.
//!
//! # Deliberate simplifications
//!
//! - **Strategic merge patch** is applied as a JSON merge patch: lists are replaced, not merged
//!   by their merge keys, and `$patch`/`$retainKeys` directives are not interpreted.
//! - **Server-side apply** is a merge patch of the applied configuration that creates the
//!   object if absent (201). `fieldManager` is required but only checked for presence; `force`
//!   is accepted and ignored; there is no field ownership, so no apply conflicts (409) and a
//!   field dropped from a later apply is **not** removed. `managedFields` are never written.
//!   Apply bodies must be JSON (kube-rs sends JSON); YAML is not parsed.
//! - Create and replace bodies must be JSON; no YAML, CBOR or protobuf, and no `Table` output.
//! - No authentication or authorisation: any token (or none) is accepted.
//! - No discovery documents (`/api`, `/apis`, OpenAPI); `/version` reports v1.33.
//! - No garbage collector (ownerReferences are stored, dependents are not deleted;
//!   `propagationPolicy` is validated and otherwise ignored), no graceful pod deletion, no
//!   controllers (a Service gets no EndpointSlices, a Deployment no Pods), no admission
//!   webhooks, no CRD objects needed or schema validation of custom resources, no
//!   `kubernetes` Service in `default`, no `kube-public`/`kube-node-lease` namespaces.
//! - One history for all resources, sized by [`Options::history_window`] changes (the real
//!   watch cache keeps one per resource, sized by time and count); a compaction affects open
//!   watches that are behind, which then get `410` (the real server would usually have already
//!   buffered their events).
//! - Bookmarks come every [`Options::bookmark_interval`] (real: about a minute); without
//!   `timeoutSeconds` a watch has no server-side timeout (real: 30–60 min).
//! - Continue tokens are opaque hex, not the real base64 JSON; `limit` on `resourceVersion=0`
//!   is ignored (the old watch-cache behaviour).
//! - Memory: the history keeps every version it covers (each change holds its object and the
//!   one before, shared with the table), so memory grows with `history_window` × object size.
//!
//! # Notes for tests
//!
//! - kube-rs' `watcher` (default `ListWatch`) sends `GET …?limit=500` (no `resourceVersion`:
//!   kube-rs drops `resourceVersion=0` when a limit is set), then `continue` pages, then
//!   `?watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=<list RV>`; after
//!   a stream ends it re-watches from the last event or bookmark version, and after `410` it
//!   relists. With `streaming_lists()` it sends one
//!   `?watch=true&…&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0`.
//! - To simulate an apiserver restart that loses history, call [`Handle::compact`] then
//!   [`Handle::close_watches`]; do the writes that the client must "miss" through the
//!   [`Handle`] (synchronous) before them, with no `.await` in between, so no watch event can
//!   slip out first.
//! - kube-rs retries `429`/`503`/`504` itself (15 times, with back-off); a read at a version
//!   the store never reaches therefore stalls a default client for minutes. Set
//!   `Config::default_retry = false` where a test wants to see the `504`.
//! - 10 000 `LoadBalancer` Services need `allocateLoadBalancerNodePorts: false`: the node port
//!   range holds 2768 ports, here as in a cluster.
//! - A restarted binary starts from an empty store and `resourceVersion` 2; clients holding a
//!   higher version wait for it (and get `504`), so restart the clients with it.
#![forbid(unsafe_code)]

mod error;
mod meta;
mod render;
mod resource;
mod selector;
mod server;
mod store;
mod strategy;
mod validation;
mod watch;

pub use error::ApiError;
pub use resource::ResourceId;
pub use server::{Handle, Options, start};
