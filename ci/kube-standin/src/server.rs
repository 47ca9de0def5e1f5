//! The HTTP side: [`Options`], [`start`], the [`Handle`] tests hold, and the request handlers
//! that map the REST paths and query parameters of the Kubernetes API onto the store.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{ApiError, FieldError};
use crate::render::{Rendered, View};
use crate::resource::{Resolved, ResourceId};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Filter, PatchType, Preconditions, Store, supports_field};
use crate::watch::{Start, WatchStream};

/// How long a read or watch asking for a version newer than the store's waits for it before
/// `504 Timeout` (the real server's `resourceVersion` "too large" wait).
const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

/// The largest request body accepted.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on. Default `127.0.0.1:0` (a free port).
    pub bind: SocketAddr,
    /// How often an idle watch that asked for bookmarks gets one. Default 1 s (the real server
    /// sends one about every minute; tests want them sooner).
    pub bookmark_interval: Duration,
    /// How many past changes are kept for watches resuming from an older `resourceVersion`
    /// and for paginated or exact-version lists. Default 200 000.
    pub history_window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            history_window: 200_000,
        }
    }
}

/// State shared by the handlers, the watches and the [`Handle`].
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// The newest committed version; watches wait on it.
    pub rv_tx: watch::Sender<u64>,
    /// Bumped by [`Handle::close_watches`]: every watch open at that moment ends.
    pub close_tx: watch::Sender<u64>,
    /// Set on shutdown: every watch ends, including ones opened afterwards.
    pub closing: AtomicBool,
    pub open_watches: AtomicUsize,
    pub bookmark_interval: Duration,
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

// === impl Shared ===

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store can hold tens of thousands of objects: show a summary.
        f.debug_struct("Shared")
            .field("resource_version", &*self.rv_tx.borrow())
            .field("open_watches", &self.open_watches.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Runs `f` under the store lock and wakes the watches if it committed anything.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, rv) = {
            let mut s = self.store.lock();
            let r = f(&mut s);
            (r, s.rv)
        };
        self.rv_tx.send_if_modified(|v| {
            if *v == rv {
                false
            } else {
                *v = rv;
                true
            }
        });
        r
    }

    fn count(&self, verb: &str, resource: String) {
        *self
            .counts
            .lock()
            .entry((verb.to_string(), resource))
            .or_insert(0) += 1;
    }

    /// Waits until the store reaches version `want`.
    async fn wait_for(&self, want: u64) -> Result<(), ApiError> {
        let mut rx = self.rv_tx.subscribe();
        match tokio::time::timeout(TOO_LARGE_WAIT, rx.wait_for(|v| *v >= want)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::too_large_resource_version(
                want,
                *self.rv_tx.borrow(),
            )),
        }
    }
}

/// A running stand-in. Dropping it stops the server (without waiting for it).
#[derive(Debug)]
pub struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a stand-in on `opts.bind`.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn start(opts: Options) -> anyhow::Result<Handle> {
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("binding {}", opts.bind))?;
    let addr = listener.local_addr()?;
    let store = Store::new(opts.history_window);
    let rv = store.rv;
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        rv_tx: watch::Sender::new(rv),
        close_tx: watch::Sender::new(0),
        closing: AtomicBool::new(false),
        open_watches: AtomicUsize::new(0),
        bookmark_interval: opts.bookmark_interval,
        counts: Mutex::new(BTreeMap::new()),
    });
    let app = Router::new()
        .route("/version", get(version))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .fallback(api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared.clone());
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::debug!(%addr, "kube stand-in listening");
    Ok(Handle {
        addr,
        shared,
        stop,
        task: Some(task),
    })
}

// === impl Handle ===

impl Handle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (plain http, a token user, namespace `default`),
    /// readable by `kube::Config::from_custom_kubeconfig`, `Config::infer` (via
    /// `KUBECONFIG`) and kubectl.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        std::fs::write(path, kubeconfig(&self.url()))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Drops the whole change history: a watch resuming from (or a list reading at) any
    /// older `resourceVersion` gets `410 Gone`, as after an etcd compaction. Open watches
    /// that are behind get `410` too.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// Ends every open watch stream, as an apiserver restart does; clients reconnect with
    /// their last `resourceVersion`.
    pub fn close_watches(&self) {
        self.shared.close_tx.send_modify(|e| *e += 1);
    }

    /// The number of watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Creates an object as a `POST` would (same defaults, validation and watch events),
    /// resolving the resource from `apiVersion` and `kind` ([`ResourceId::for_kind`]). A
    /// built-in namespaced object without `metadata.namespace` goes to `default`; a custom
    /// resource not seen before is namespaced if it has `metadata.namespace`, cluster-scoped
    /// if not. Returns the stored object.
    ///
    /// # Errors
    ///
    /// The `Status` a `POST` would get.
    pub fn insert(&self, obj: Value) -> Result<Value, ApiError> {
        self.shared.write(|s| s.insert(obj)).map(|o| (*o).clone())
    }

    /// Creates many objects under one lock (fast seeding; watches see one `ADDED` each).
    /// Stops at the first failure; the objects before it stay. Returns how many were created.
    ///
    /// # Errors
    ///
    /// The index of the failing object and its `Status`.
    pub fn insert_many(
        &self,
        objs: impl IntoIterator<Item = Value>,
    ) -> Result<usize, (usize, ApiError)> {
        self.shared.write(|s| {
            let mut n = 0;
            for obj in objs {
                s.insert(obj).map_err(|e| (n, e))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The stored object (with the `apiVersion` it was last written with).
    pub fn get(&self, resource: &ResourceId, namespace: Option<&str>, name: &str) -> Option<Value> {
        let s = self.shared.store.lock();
        let t = s.table_index(resource)?;
        let key = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        s.tables[t].objects.get(&key).map(|o| (**o).clone())
    }

    /// All stored objects of a resource, in one namespace or all, in key order.
    pub fn list(&self, resource: &ResourceId, namespace: Option<&str>) -> Vec<Value> {
        let s = self.shared.store.lock();
        let Some(t) = s.table_index(resource) else {
            return Vec::new();
        };
        let prefix = namespace.map(|ns| format!("{ns}/"));
        s.tables[t]
            .objects
            .iter()
            .filter(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str())))
            .map(|(_, v)| (**v).clone())
            .collect()
    }

    /// Deletes an object as a `DELETE` would (finalizers honoured, watchers notified).
    ///
    /// # Errors
    ///
    /// The `Status` a `DELETE` would get.
    pub fn delete(
        &self,
        resource: &ResourceId,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.shared
            .write(|s| {
                let res = s.resolve(
                    &resource.group,
                    "v1",
                    &resource.plural,
                    namespace.is_some(),
                    false,
                )?;
                s.delete(&res, namespace, name, &Preconditions::default(), false)
            })
            .map(|o| (*o).clone())
    }

    /// The newest `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv
    }

    /// How many past changes are kept now.
    pub fn history_len(&self) -> usize {
        self.shared.store.lock().history_len()
    }

    /// How many requests of `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`) reached `resource` (`plural[.group][/subresource]`,
    /// e.g. `services/status`, `leases.coordination.k8s.io`).
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every request count, keyed `"verb resource"`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .counts
            .lock()
            .iter()
            .map(|((v, r), n)| (format!("{v} {r}"), *n))
            .collect()
    }

    /// Sets every request count back to zero.
    pub fn reset_request_counts(&self) {
        self.shared.counts.lock().clear();
    }

    /// Stops the server: ends all watches, stops accepting, and waits (up to 5 s) for the
    /// requests in flight.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    fn signal_stop(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.close_watches();
        let _ = self.stop.send(true);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The kubeconfig text for a server at `url`.
pub(crate) fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sluice-kube-standin
  cluster:
    server: {url}
contexts:
- name: sluice-kube-standin
  context:
    cluster: sluice-kube-standin
    user: sluice-kube-standin
    namespace: default
current-context: sluice-kube-standin
users:
- name: sluice-kube-standin
  user:
    token: sluice-kube-standin
preferences: {{}}
"
    )
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-sluice-kube-standin",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none",
            "compiler": "none",
            "platform": "linux/amd64"
        }),
    )
}

async fn ok() -> &'static str {
    "ok"
}

fn json_response(code: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = code;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error_response(&ApiError::internal(e.to_string())),
    }
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = Response::new(Body::from(e.to_status().to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A request path of the resource API.
#[derive(Debug, PartialEq)]
struct ApiPath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
    /// The deprecated `/watch/` path prefix.
    watch_prefix: bool,
}

fn parse_path(path: &str) -> Option<ApiPath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let mut watch_prefix = false;
    if let ["watch", tail @ ..] = rest {
        watch_prefix = true;
        rest = tail;
    }
    let core = group.is_empty();
    let (namespace, plural, tail) = match rest {
        // `namespaces/{name}/status` is the Namespace's own subresource.
        ["namespaces", name, sub @ ("status" | "finalize")] if core => {
            (None, "namespaces", vec![*name, *sub])
        }
        ["namespaces", ns, plural, tail @ ..] => (Some(*ns), *plural, tail.to_vec()),
        [plural, tail @ ..] => (None, *plural, tail.to_vec()),
        [] => return None,
    };
    let (name, subresource) = match tail.as_slice() {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(ApiPath {
        group: group.to_string(),
        version: version.to_string(),
        namespace: namespace.map(str::to_string),
        plural: plural.to_string(),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        watch_prefix,
    })
}

/// The query parameters the stand-in understands; others are ignored, as by the real server.
#[derive(Debug, Default)]
struct Params {
    label_selector: Option<String>,
    field_selector: Option<String>,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    limit: Option<usize>,
    continue_token: Option<String>,
    watch: bool,
    allow_watch_bookmarks: bool,
    send_initial_events: Option<bool>,
    timeout_seconds: Option<u64>,
    field_manager: Option<String>,
    force: Option<bool>,
    dry_run: bool,
    propagation_policy: Option<String>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name}: invalid boolean value {v:?}"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("{name}: invalid value {v:?}")))
}

// === impl Params ===

impl Params {
    fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "labelSelector" => p.label_selector = Some(v),
                "fieldSelector" => p.field_selector = Some(v),
                "resourceVersion" => p.resource_version = Some(v),
                "resourceVersionMatch" => p.resource_version_match = Some(v),
                "limit" => p.limit = Some(parse_num(&k, &v)?),
                "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
                "watch" => p.watch = parse_bool(&k, &v)?,
                "allowWatchBookmarks" => p.allow_watch_bookmarks = parse_bool(&k, &v)?,
                "sendInitialEvents" => p.send_initial_events = Some(parse_bool(&k, &v)?),
                "timeoutSeconds" => p.timeout_seconds = Some(parse_num(&k, &v)?),
                "fieldManager" => p.field_manager = Some(v),
                "force" => p.force = Some(parse_bool(&k, &v)?),
                "dryRun" => p.dry_run = !v.is_empty(),
                "propagationPolicy" => p.propagation_policy = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn wants_metadata_only(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn parse_rv(v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))
}

fn invalid_options(kind: &str, errs: &[FieldError]) -> ApiError {
    ApiError::invalid("meta.k8s.io", kind, "", errs)
}

/// The opaque `continue` token: the version of the first page and the last key served.
fn encode_continue(rv: u64, key: &str) -> String {
    format!("{rv}:{key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    let (rv, key) = text.split_once(':').ok_or_else(bad)?;
    Ok((rv.parse().map_err(|_| bad())?, key.to_string()))
}

/// The resource name requests are counted under.
fn counted(res: &ApiPath) -> String {
    let mut s = if res.group.is_empty() {
        res.plural.clone()
    } else {
        format!("{}.{}", res.plural, res.group)
    };
    if let Some(sub) = &res.subresource {
        s.push('/');
        s.push_str(sub);
    }
    s
}

/// Everything under `/api` and `/apis`.
async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, &method, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let Some(path) = parse_path(uri.path()) else {
        return Err(ApiError::no_route());
    };
    let params = Params::parse(uri)?;
    let watching = path.watch_prefix || (params.watch && *method == Method::GET);
    let verb = match (method.as_str(), path.name.is_some()) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    shared.count(verb, counted(&path));
    let status = match path.subresource.as_deref() {
        None => false,
        Some("status") => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    if status && !matches!(verb, "get" | "update" | "patch") {
        return Err(ApiError::method_not_allowed());
    }
    let write = matches!(verb, "create" | "update" | "patch");
    let res = shared.write(|s| {
        s.resolve(
            &path.group,
            &path.version,
            &path.plural,
            path.namespace.is_some(),
            write,
        )
    })?;
    if status && !res.status_subresource {
        return Err(ApiError::no_route());
    }
    // A namespaced resource addressed without a namespace: only the all-namespaces list and
    // watch exist.
    if res.namespaced && path.namespace.is_none() {
        match verb {
            "list" | "watch" if path.name.is_none() => {}
            "create" | "deletecollection" => return Err(ApiError::method_not_allowed()),
            _ => return Err(ApiError::no_route()),
        }
    }
    let ns = path.namespace.as_deref();
    let view = View {
        api_version: res.api_version(),
        kind: res.kind.clone(),
        metadata_only: wants_metadata_only(headers),
        strip_item_type: res.builtin.is_some(),
    };
    let dry_run = params.dry_run;
    match verb {
        "get" => {
            let name = path.name.as_deref().unwrap_or("");
            if let Some(rv) = params
                .resource_version
                .as_deref()
                .filter(|v| !v.is_empty() && *v != "0")
            {
                let want = parse_rv(rv)?;
                shared.wait_for(want).await?;
            }
            let obj = shared.store.lock().get(&res, ns, name)?;
            Ok(json_response(StatusCode::OK, &view.object(&obj)))
        }
        "list" => list(shared, &res, ns, &params, &view).await,
        "watch" => watch(shared, &res, ns, path.name.as_deref(), &params, view).await,
        "create" => {
            if path.name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            check_json_body(headers)?;
            let obj = parse_body(body)?;
            let created = shared.write(|s| s.create(&res, ns, obj, dry_run))?;
            Ok(json_response(StatusCode::CREATED, &view.object(&created)))
        }
        "update" => {
            check_json_body(headers)?;
            let name = path.name.as_deref().unwrap_or("");
            let obj = parse_body(body)?;
            let (stored, created) =
                shared.write(|s| s.replace(&res, ns, name, status, obj, dry_run))?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &view.object(&stored)))
        }
        "patch" => {
            let name = path.name.as_deref().unwrap_or("");
            let kind = patch_type(&res, &media_type(headers))?;
            match (kind, &params.field_manager, params.force) {
                (PatchType::Apply, None, _) => {
                    return Err(invalid_options(
                        "PatchOptions",
                        &[FieldError::required(
                            "fieldManager",
                            "is required for apply patch",
                        )],
                    ));
                }
                (k, _, Some(_)) if k != PatchType::Apply => {
                    return Err(invalid_options(
                        "PatchOptions",
                        &[FieldError::forbidden(
                            "force",
                            "may not be specified for non-apply patch",
                        )],
                    ));
                }
                _ => {}
            }
            let (stored, created) =
                shared.write(|s| s.patch(&res, ns, name, status, kind, body, dry_run))?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &view.object(&stored)))
        }
        "delete" => {
            let name = path.name.as_deref().unwrap_or("");
            let (pre, body_dry_run) = delete_options(body, &params)?;
            let deleted =
                shared.write(|s| s.delete(&res, ns, name, &pre, dry_run || body_dry_run))?;
            Ok(json_response(StatusCode::OK, &view.object(&deleted)))
        }
        "deletecollection" => {
            let (_, body_dry_run) = delete_options(body, &params)?;
            let filter = make_filter(&res, ns, &params)?;
            let deleted = shared.write(|s| s.delete_collection(&filter, dry_run || body_dry_run));
            let rv = shared.store.lock().rv;
            let items: Vec<Rendered<'_>> = deleted.iter().map(|o| view.item(o)).collect();
            Ok(json_response(
                StatusCode::OK,
                &ListOut {
                    kind: view.list_kind(),
                    api_version: view.list_api_version(),
                    metadata: ListMeta {
                        resource_version: rv.to_string(),
                        continue_token: None,
                        remaining: None,
                    },
                    items,
                },
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn check_json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers).as_str() {
        "" | "application/json" | "*/*" => Ok(()),
        _ => Err(ApiError::unsupported_media_type(&["application/json"])),
    }
}

fn patch_type(res: &Resolved, media: &str) -> Result<PatchType, ApiError> {
    // Strategic merge needs the Go types' patch strategies; custom resources do not take it.
    let strategic = res.builtin.is_some();
    match media {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" if strategic => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        _ if strategic => Err(ApiError::unsupported_media_type(&[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ])),
        _ => Err(ApiError::unsupported_media_type(&[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ])),
    }
}

/// `DeleteOptions` from the body (kube-rs sends them there) and the query.
fn delete_options(body: &[u8], params: &Params) -> Result<(Preconditions, bool), ApiError> {
    const POLICIES: &[&str] = &["Orphan", "Background", "Foreground"];
    let mut pre = Preconditions::default();
    let mut dry_run = false;
    let mut policy = params.propagation_policy.clone();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let opts: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = opts.get("preconditions") {
            pre.uid = p.get("uid").and_then(Value::as_str).map(str::to_string);
            pre.resource_version = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        dry_run = opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if let Some(p) = opts.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        }
    }
    if let Some(p) = policy
        && !POLICIES.contains(&p.as_str())
    {
        return Err(invalid_options(
            "DeleteOptions",
            &[FieldError::not_supported("propagationPolicy", &p, POLICIES)],
        ));
    }
    Ok((pre, dry_run))
}

fn make_filter(res: &Resolved, ns: Option<&str>, params: &Params) -> Result<Filter, ApiError> {
    let labels = match &params.label_selector {
        Some(s) => LabelSelector::parse(s)?,
        None => LabelSelector::default(),
    };
    let fields = match &params.field_selector {
        Some(s) => FieldSelector::parse(s, |f| supports_field(&res.group, &res.plural, f))?,
        None => FieldSelector::default(),
    };
    Ok(Filter {
        table: res.table,
        namespace: ns.map(str::to_string),
        labels,
        fields,
    })
}

#[derive(Serialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
    #[serde(rename = "remainingItemCount", skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
}

#[derive(Serialize)]
struct ListOut<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    metadata: ListMeta,
    items: Vec<Rendered<'a>>,
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve \
the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that \
were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

async fn list(
    shared: &Arc<Shared>,
    res: &Resolved,
    ns: Option<&str>,
    params: &Params,
    view: &View,
) -> Result<Response, ApiError> {
    let filter = make_filter(res, ns, params)?;
    let limit = params.limit.filter(|l| *l > 0);
    let rv = params.resource_version.as_deref().filter(|s| !s.is_empty());
    let page = if let Some(token) = &params.continue_token {
        if rv.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (at, after) = decode_continue(token)?;
        let store = shared.store.lock();
        if at > store.rv {
            return Err(ApiError::bad_request(
                "continue key is not valid: resource version in the future",
            ));
        }
        store.list(&filter, at, Some(&after), limit, |_| {
            ApiError::expired(CONTINUE_EXPIRED)
        })?
    } else {
        let exact = match (params.resource_version_match.as_deref(), rv) {
            (None | Some(""), _) => None,
            (Some(_), None) => {
                return Err(invalid_options(
                    "ListOptions",
                    &[FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )],
                ));
            }
            (Some("Exact"), Some("0")) => {
                return Err(invalid_options(
                    "ListOptions",
                    &[FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    )],
                ));
            }
            (Some("Exact"), Some(_)) => Some(true),
            (Some("NotOlderThan"), Some(_)) => Some(false),
            (Some(other), Some(_)) => {
                return Err(invalid_options(
                    "ListOptions",
                    &[FieldError::not_supported(
                        "resourceVersionMatch",
                        other,
                        &["Exact", "NotOlderThan"],
                    )],
                ));
            }
        };
        match rv {
            None => {
                let store = shared.store.lock();
                store.list(&filter, store.rv, None, limit, |_| ApiError::expired(""))?
            }
            // "Any" version: served from the watch cache, which ignores `limit`.
            Some("0") => {
                let store = shared.store.lock();
                store.list(&filter, store.rv, None, None, |_| ApiError::expired(""))?
            }
            Some(v) => {
                let want = parse_rv(v)?;
                shared.wait_for(want).await?;
                // Without `resourceVersionMatch`, a limited list is exact, an unlimited one
                // "not older than".
                let exact = exact.unwrap_or(limit.is_some());
                let store = shared.store.lock();
                let at = if exact { want } else { store.rv };
                store.list(&filter, at, None, limit, |_| {
                    ApiError::expired("The resourceVersion for the provided list is too old.")
                })?
            }
        }
    };
    let continue_token = page
        .more_after
        .as_deref()
        .map(|k| encode_continue(page.rv, k));
    let items: Vec<Rendered<'_>> = page.items.iter().map(|o| view.item(o)).collect();
    Ok(json_response(
        StatusCode::OK,
        &ListOut {
            kind: view.list_kind(),
            api_version: view.list_api_version(),
            metadata: ListMeta {
                resource_version: page.rv.to_string(),
                continue_token,
                remaining: page.remaining,
            },
            items,
        },
    ))
}

async fn watch(
    shared: &Arc<Shared>,
    res: &Resolved,
    ns: Option<&str>,
    name: Option<&str>,
    params: &Params,
    view: View,
) -> Result<Response, ApiError> {
    let mut filter = make_filter(res, ns, params)?;
    if let Some(name) = name {
        // The deprecated single-object watch `…/{name}?watch=true`.
        let sel = format!("metadata.name={name}");
        filter.fields = FieldSelector::parse(&sel, |_| true)?;
    }
    let send_initial = params.send_initial_events;
    let rv_match = params
        .resource_version_match
        .as_deref()
        .filter(|s| !s.is_empty());
    match (send_initial, rv_match) {
        (None, Some(_)) => {
            return Err(invalid_options(
                "ListOptions",
                &[FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                )],
            ));
        }
        (Some(_), m) if m != Some("NotOlderThan") => {
            return Err(invalid_options(
                "ListOptions",
                &[FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )],
            ));
        }
        _ => {}
    }
    if send_initial == Some(true) && !params.allow_watch_bookmarks {
        return Err(invalid_options(
            "ListOptions",
            &[FieldError::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            )],
        ));
    }
    let rv = params
        .resource_version
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "0");
    let want = match rv {
        Some(v) => {
            let want = parse_rv(v)?;
            shared.wait_for(want).await?;
            Some(want)
        }
        None => None,
    };
    // Synthetic ADDED events: legacy watches from "now" (no version or "0"), and every
    // watch asking for initial events.
    let initial = match send_initial {
        Some(s) => s,
        None => want.is_none(),
    };
    let start = {
        let store = shared.store.lock();
        if initial {
            let (objects, rv) = store.snapshot(&filter);
            Start::Initial {
                objects,
                rv,
                initial_end: send_initial == Some(true),
            }
        } else {
            let from = want.unwrap_or(store.rv);
            if from < store.floor {
                Start::Expired {
                    wanted: from,
                    floor: store.floor,
                }
            } else {
                Start::From(from)
            }
        }
    };
    let timeout = params
        .timeout_seconds
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let stream = WatchStream::new(
        shared.clone(),
        filter,
        view,
        start,
        params.allow_watch_bookmarks,
        timeout,
    );
    let mut r = Response::new(stream.into_body());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_path("/api/v1/namespaces/default/services/web/status").unwrap();
        assert_eq!(
            p,
            ApiPath {
                group: String::new(),
                version: "v1".into(),
                namespace: Some("default".into()),
                plural: "services".into(),
                name: Some("web".into()),
                subresource: Some("status".into()),
                watch_prefix: false,
            }
        );
        let p = parse_path("/apis/discovery.k8s.io/v1/endpointslices").unwrap();
        assert_eq!(
            (p.group.as_str(), p.plural.as_str(), p.namespace, p.name),
            ("discovery.k8s.io", "endpointslices", None, None)
        );
        let p = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (p.plural.as_str(), p.name.as_deref(), p.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let p = parse_path("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(
            (
                p.plural.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("status"))
        );
        let p = parse_path("/apis/metallb.io/v1beta1/namespaces/ms/ipaddresspools/pool").unwrap();
        assert_eq!(
            (p.group.as_str(), p.version.as_str(), p.namespace.as_deref()),
            ("metallb.io", "v1beta1", Some("ms"))
        );
        let p = parse_path("/api/v1/watch/namespaces/default/services").unwrap();
        assert!(p.watch_prefix);
        assert!(parse_path("/api/v1").is_none());
        assert!(parse_path("/apis/g/v/a/b/c/d").is_none());
        assert!(parse_path("/metrics").is_none());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web-1");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web-1".to_string())
        );
        assert_eq!(decode_continue("zz").unwrap_err().code, 400);
    }
}
