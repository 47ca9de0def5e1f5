//! The in-memory store: one table per resource, one global `resourceVersion` counter, and the
//! history of changes that watches replay and historical list reads undo.
//!
//! Invariants (the watch and list code relies on them):
//! - every committed write increments `rv` by exactly one and appends exactly one [`Change`]
//!   with that version, so `history[i].rv == floor + 1 + i`;
//! - `floor` is the newest version no longer in `history`: every change with `rv > floor` is
//!   there. A read or watch "at" a version `v >= floor` can therefore be served exactly;
//!   `v < floor` is `410 Gone`;
//! - a change keeps the object before it (`prev`), which is what lets a list be read at an
//!   older version (pages of one paginated list all come from the version of the first page)
//!   and a watch tell an object leaving its selector from one entering it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, FieldError, qualify};
use crate::meta::{
    Ids, ensure_object, field_string, finalizers, meta_str, metadata, metadata_mut,
    normalize_metadata, now_rfc3339,
};
use crate::resource::{self, Builtin, Resolved, ResourceId, builtin, guess_kind};
use crate::selector::{FieldSelector, LabelSelector};
use crate::strategy::{self, Alloc};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed write.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub table: usize,
    pub key: Arc<str>,
    pub kind: ChangeKind,
    /// The object after the change; for a delete, its last state at the delete's version.
    pub obj: Arc<Value>,
    /// The object before the change (absent for a create).
    pub prev: Option<Arc<Value>>,
}

/// One resource's objects, keyed `namespace/name` (or `name`), which sorts like etcd keys.
#[derive(Debug)]
pub(crate) struct Table {
    pub id: ResourceId,
    builtin: Option<&'static Builtin>,
    /// The kind written so far (custom resources learn it from the first write).
    kind: Option<String>,
    /// Scope of a custom resource, fixed by the first write.
    namespaced: Option<bool>,
    pub objects: BTreeMap<String, Arc<Value>>,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// RFC 6902 `application/json-patch+json`.
    Json,
    /// RFC 7386 `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`, applied as a merge patch.
    Strategic,
    /// `application/apply-patch+yaml` (JSON bodies), applied as a merge patch that may create.
    Apply,
}

/// Which objects a list or watch wants.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub table: usize,
    /// `Some(ns)`: only that namespace.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

// === impl Filter ===

impl Filter {
    /// Whether an object (stored under `key`) passes.
    pub(crate) fn matches(&self, key: &str, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && !key
                .strip_prefix(ns.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            return false;
        }
        let labels = metadata(obj)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        if !self.labels.matches(labels) {
            return false;
        }
        self.fields.is_empty()
            || self.fields.matches(|f| match f {
                "metadata.name" => meta_str(obj, "name").unwrap_or("").to_string(),
                "metadata.namespace" => meta_str(obj, "namespace").unwrap_or("").to_string(),
                other => field_string(obj, other),
            })
    }
}

/// Which field selectors a resource supports (besides `metadata.name`/`metadata.namespace`).
pub(crate) fn supports_field(group: &str, plural: &str, field: &str) -> bool {
    if field == "metadata.name" || field == "metadata.namespace" {
        return true;
    }
    let extra: &[&str] = match (group, plural) {
        ("" | "events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        _ => &[],
    };
    extra.contains(&field)
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct Page {
    pub items: Vec<Arc<Value>>,
    /// The version the page was read at.
    pub rv: u64,
    /// The key of the last item, when more items follow.
    pub more_after: Option<String>,
    /// How many matching items follow (only without selectors, as the real server).
    pub remaining: Option<u64>,
}

/// The store.
#[derive(Debug)]
pub(crate) struct Store {
    /// The newest committed version.
    pub rv: u64,
    /// Every change with a version above this is in `history`.
    pub floor: u64,
    history: VecDeque<Change>,
    window: usize,
    pub tables: Vec<Table>,
    index: HashMap<ResourceId, usize>,
    ids: Ids,
    alloc: Alloc,
}

fn obj_key(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    metadata_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

fn rv_of(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Everything but `metadata` and `status` (and type meta) is equal: the generation stays.
fn same_spec(a: &Value, b: &Value) -> bool {
    const SKIP: &[&str] = &["metadata", "status", "apiVersion", "kind"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let keep = |(k, _): &(&String, &Value)| !SKIP.contains(&k.as_str());
    // serde_json maps are ordered, so equal maps iterate equally.
    a.iter().filter(keep).eq(b.iter().filter(keep))
}

/// The real server writes nothing (no new version, no event) when an update changes nothing.
fn same_object(old: &Value, new: &mut Value) -> bool {
    let rv = metadata(old)
        .and_then(|m| m.get("resourceVersion"))
        .cloned();
    let meta = metadata_mut(new);
    match rv {
        Some(rv) => {
            meta.insert("resourceVersion".into(), rv);
        }
        None => {
            meta.remove("resourceVersion");
        }
    }
    let same = old == new;
    metadata_mut(new).remove("resourceVersion");
    same
}

fn summarize(obj: &Value) -> String {
    let s = obj.to_string();
    if s.len() > 30 {
        let cut = (0..=30).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{} ...", &s[..cut])
    } else {
        s
    }
}

// === impl Store ===

impl Store {
    /// An empty store with the namespaces `default` and `kube-system`.
    pub(crate) fn new(window: usize) -> Self {
        let mut s = Self {
            rv: 0,
            floor: 0,
            history: VecDeque::new(),
            window,
            tables: Vec::new(),
            index: HashMap::new(),
            ids: Ids::new(),
            alloc: Alloc::new(),
        };
        for ns in ["default", "kube-system"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = s.insert(obj) {
                unreachable!("seeding namespace {ns}: {e}");
            }
        }
        s
    }

    fn table_for(&mut self, id: &ResourceId) -> usize {
        if let Some(&t) = self.index.get(id) {
            return t;
        }
        let t = self.tables.len();
        self.tables.push(Table {
            id: id.clone(),
            builtin: builtin(&id.group, &id.plural),
            kind: None,
            namespaced: None,
            objects: BTreeMap::new(),
        });
        self.index.insert(id.clone(), t);
        t
    }

    /// Resolves the resource a request names. `path_namespaced`: the path names a namespace.
    /// `write`: a write through a cluster-scoped or namespaced path fixes a custom resource's
    /// scope.
    ///
    /// # Errors
    ///
    /// 404 when a cluster-scoped resource is addressed inside a namespace.
    pub(crate) fn resolve(
        &mut self,
        group: &str,
        version: &str,
        plural: &str,
        path_namespaced: bool,
        write: bool,
    ) -> Result<Resolved, ApiError> {
        let t = self.table_for(&ResourceId::new(group, plural));
        let table = &mut self.tables[t];
        let namespaced = match (table.builtin, table.namespaced) {
            (Some(b), _) => !b.cluster,
            (None, Some(n)) => n,
            (None, None) => {
                if write {
                    table.namespaced = Some(path_namespaced);
                }
                path_namespaced
            }
        };
        if !namespaced && path_namespaced {
            return Err(ApiError::no_route());
        }
        let kind = table
            .builtin
            .map(|b| b.kind.to_string())
            .or_else(|| table.kind.clone())
            .unwrap_or_else(|| guess_kind(plural));
        Ok(Resolved {
            table: t,
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind,
            namespaced,
            status_subresource: table.builtin.is_none_or(|b| b.status),
            create_on_update: table.builtin.is_some_and(|b| b.create_on_update),
            builtin: table.builtin,
        })
    }

    /// Checks and fills `apiVersion` and `kind` of a written object.
    fn check_type_meta(&mut self, res: &Resolved, obj: &mut Value) -> Result<(), ApiError> {
        let Some(root) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): json: cannot unmarshal into an object ({})",
                res.kind,
                summarize(obj)
            )));
        };
        let want_av = res.api_version();
        let av = root
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let kind = root
            .get("kind")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if res.builtin.is_none() {
            // Custom resources are decoded as unstructured objects, which need both.
            if kind.is_none() {
                return Err(ApiError::bad_request(format!(
                    "Object 'Kind' is missing in '{}'",
                    summarize(obj)
                )));
            }
            if av.is_none() {
                return Err(ApiError::bad_request(format!(
                    "Object 'apiVersion' is missing in '{}'",
                    summarize(obj)
                )));
            }
        }
        if let Some(av) = &av
            && *av != want_av
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        let known = res
            .builtin
            .map(|b| b.kind.to_string())
            .or_else(|| self.tables[res.table].kind.clone());
        let kind = match (kind, known) {
            (Some(k), Some(known)) if k != known => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({known}) for {}",
                    qualify(&res.group, &res.plural)
                )));
            }
            (Some(k), _) => k,
            (None, Some(known)) => known,
            (None, None) => res.kind.clone(),
        };
        if self.tables[res.table].kind.is_none() && res.builtin.is_none() {
            self.tables[res.table].kind = Some(kind.clone());
        }
        root.insert("apiVersion".into(), Value::String(want_av));
        root.insert("kind".into(), Value::String(kind));
        Ok(())
    }

    fn invalid(res: &Resolved, name: &str, errs: &[FieldError]) -> ApiError {
        ApiError::invalid(&res.group, &res.kind, name, errs)
    }

    /// Creation in `ns` is allowed (the NamespaceLifecycle admission plugin).
    fn check_namespace(&self, res: &Resolved, ns: &str, name: &str) -> Result<(), ApiError> {
        let nst = self.index.get(&ResourceId::namespaces()).copied();
        let found = nst.and_then(|t| self.tables[t].objects.get(ns));
        match found {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if meta_str(n, "deletionTimestamp").is_some() => Err(ApiError::forbidden(
                &res.group,
                &res.plural,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Appends one change. With `dry_run` nothing is stored and the object keeps the version
    /// it had (none for a create).
    fn commit(
        &mut self,
        table: usize,
        key: String,
        kind: ChangeKind,
        mut obj: Value,
        prev: Option<Arc<Value>>,
        dry_run: bool,
    ) -> Arc<Value> {
        if dry_run {
            match &prev {
                Some(p) => set_rv(&mut obj, rv_of(p)),
                None => {
                    metadata_mut(&mut obj).remove("resourceVersion");
                }
            }
            return Arc::new(obj);
        }
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Arc::new(obj);
        let objects = &mut self.tables[table].objects;
        if kind == ChangeKind::Deleted {
            objects.remove(&key);
        } else {
            objects.insert(key.clone(), obj.clone());
        }
        self.history.push_back(Change {
            rv: self.rv,
            table,
            key: key.into(),
            kind,
            obj: obj.clone(),
            prev,
        });
        while self.history.len() > self.window {
            if let Some(c) = self.history.pop_front() {
                self.floor = c.rv;
            }
        }
        if self.window == 0 {
            self.floor = self.rv;
        }
        obj
    }

    /// Drops the whole history: any watch or read at an older version is `410 Gone`.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// Creates an object (`POST`).
    ///
    /// # Errors
    ///
    /// 400 for a body that does not fit the path, 404 for a missing namespace, 403 for a
    /// terminating one, 409 `AlreadyExists`, 422 `Invalid`, 500 for a `resourceVersion` set.
    pub(crate) fn create(
        &mut self,
        res: &Resolved,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.check_type_meta(res, &mut obj)?;
        let meta = metadata_mut(&mut obj);
        let ns = if res.namespaced {
            let Some(ns) = ns else {
                return Err(ApiError::method_not_allowed());
            };
            match meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(have) if have != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
            Some(ns)
        } else {
            meta.remove("namespace");
            None
        };
        let given_name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(ns) = ns {
            self.check_namespace(res, ns, given_name.as_deref().unwrap_or(""))?;
        }
        let meta = metadata_mut(&mut obj);
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        meta.insert("uid".into(), json!(self.ids.uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        let name = match (given_name, generate) {
            (Some(n), _) => n,
            (None, Some(prefix)) => {
                let objects = &self.tables[res.table].objects;
                let mut pick = String::new();
                for _ in 0..16 {
                    pick = format!("{prefix}{}", self.ids.name_suffix());
                    if !objects.contains_key(&obj_key(ns, &pick)) {
                        break;
                    }
                }
                pick
            }
            (None, None) => {
                return Err(Self::invalid(
                    res,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
        };
        metadata_mut(&mut obj).insert("name".into(), json!(name));
        strategy::on_create(res, &mut obj);
        normalize_metadata(&mut obj);
        let errs = strategy::validate(res, &obj, None);
        if !errs.is_empty() {
            return Err(Self::invalid(res, &name, &errs));
        }
        let key = obj_key(ns, &name);
        if self.tables[res.table].objects.contains_key(&key) {
            return Err(ApiError::already_exists(&res.group, &res.plural, &name));
        }
        if !dry_run {
            let errs = strategy::allocate(res, &mut obj, None, &mut self.alloc);
            if !errs.is_empty() {
                return Err(Self::invalid(res, &name, &errs));
            }
        }
        Ok(self.commit(res.table, key, ChangeKind::Added, obj, None, dry_run))
    }

    /// Seeds an object as a create would, resolving the resource from its type meta.
    ///
    /// # Errors
    ///
    /// As [`Store::create`]; 400 when `apiVersion` or `kind` is missing.
    pub(crate) fn insert(&mut self, obj: Value) -> Result<Arc<Value>, ApiError> {
        let av = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if av.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' or 'apiVersion' is missing in '{}'",
                summarize(&obj)
            )));
        }
        let id = ResourceId::for_kind(&av, &kind);
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        let t = self.table_for(&id);
        let namespaced = match (self.tables[t].builtin, self.tables[t].namespaced) {
            (Some(b), _) => !b.cluster,
            (None, Some(n)) => n,
            (None, None) => ns.is_some(),
        };
        let res = self.resolve(
            &id.group,
            resource::version_of(&av),
            &id.plural,
            namespaced,
            true,
        )?;
        let ns = if namespaced {
            Some(ns.unwrap_or_else(|| "default".to_string()))
        } else {
            None
        };
        self.create(&res, ns.as_deref(), obj, false)
    }

    /// Reads one object.
    ///
    /// # Errors
    ///
    /// 404 when absent.
    pub(crate) fn get(
        &self,
        res: &Resolved,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.tables[res.table]
            .objects
            .get(&obj_key(ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    /// Replaces an object (`PUT`), or its status (`PUT …/status`). Returns the stored object
    /// and whether it was created.
    ///
    /// # Errors
    ///
    /// 400 when the body's name or namespace is not the path's, 404 when absent, 409 on a
    /// stale `resourceVersion` or another `uid`, 422 `Invalid`.
    pub(crate) fn replace(
        &mut self,
        res: &Resolved,
        ns: Option<&str>,
        name: &str,
        status: bool,
        mut body: Value,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        self.check_type_meta(res, &mut body)?;
        check_name(res, ns, name, &mut body)?;
        let key = obj_key(ns, name);
        let Some(old) = self.tables[res.table].objects.get(&key).cloned() else {
            if res.create_on_update && !status {
                metadata_mut(&mut body).remove("resourceVersion");
                return self.create(res, ns, body, dry_run).map(|o| (o, true));
            }
            return Err(ApiError::not_found(&res.group, &res.plural, name));
        };
        check_preconditions(res, name, &old, &body)?;
        self.update_existing(res, key, old, body, status, dry_run)
            .map(|o| (o, false))
    }

    /// Patches an object or its status. Returns the stored object and whether an apply
    /// created it.
    ///
    /// # Errors
    ///
    /// 400 for an unparsable patch, 404 when absent (except an apply), 409 on a stale
    /// `resourceVersion` in the patch, 422 for a JSON patch that does not apply or an invalid
    /// result.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        res: &Resolved,
        ns: Option<&str>,
        name: &str,
        status: bool,
        kind: PatchType,
        body: &[u8],
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let patch: Value = serde_json::from_slice(body).map_err(|e| match kind {
            PatchType::Apply => ApiError::bad_request(format!("error decoding YAML: {e}")),
            _ => ApiError::bad_request(format!("error decoding patch: {e}")),
        })?;
        if kind != PatchType::Json && !patch.is_object() {
            return Err(ApiError::bad_request(
                "error decoding patch: json: cannot unmarshal into Go value of type map[string]interface {}",
            ));
        }
        if kind == PatchType::Apply {
            let av = patch
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let k = patch.get("kind").and_then(Value::as_str).unwrap_or("");
            if av.is_empty() || k.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid object type: apply requests need apiVersion and kind set in the body",
                ));
            }
        }
        let key = obj_key(ns, name);
        let Some(old) = self.tables[res.table].objects.get(&key).cloned() else {
            if kind != PatchType::Apply || status {
                return Err(ApiError::not_found(&res.group, &res.plural, name));
            }
            let mut obj = json!({});
            json_patch::merge(&mut obj, &patch);
            if let Some(uid) = meta_str(&obj, "uid") {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!(
                        "uid mismatch: the provided object specified uid {uid}, and no existing object was found"
                    ),
                ));
            }
            self.check_type_meta(res, &mut obj)?;
            check_name(res, ns, name, &mut obj)?;
            return self.create(res, ns, obj, dry_run).map(|o| (o, true));
        };
        let mut doc = (*old).clone();
        ensure_object(&mut doc).insert("apiVersion".into(), Value::String(res.api_version()));
        match kind {
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                for op in &ops.0 {
                    // The apiserver's JSON patch library lets a `test` for null pass on a
                    // missing path (kube-rs' finalizer helper sends exactly that).
                    if let json_patch::PatchOperation::Test(t) = op
                        && t.value.is_null()
                        && doc.pointer(t.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch(&mut doc, std::slice::from_ref(op))
                        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                }
            }
            PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
                json_patch::merge(&mut doc, &patch)
            }
        }
        self.check_type_meta(res, &mut doc)?;
        check_name(res, ns, name, &mut doc)?;
        check_preconditions(res, name, &old, &doc)?;
        self.update_existing(res, key, old, doc, status, dry_run)
            .map(|o| (o, false))
    }

    /// The common end of an update: status subresource rules, system metadata, strategy,
    /// validation, generation, no-op detection, and deletion once the last finalizer is gone.
    fn update_existing(
        &mut self,
        res: &Resolved,
        key: String,
        old: Arc<Value>,
        new: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let name = meta_str(&old, "name").unwrap_or("").to_string();
        let mut next = if status {
            // `/status` changes only `status`.
            let mut next = (*old).clone();
            let root = ensure_object(&mut next);
            match new.get("status") {
                Some(s) => {
                    root.insert("status".into(), s.clone());
                }
                None => {
                    root.remove("status");
                }
            }
            root.insert("apiVersion".into(), Value::String(res.api_version()));
            next
        } else {
            let mut next = new;
            if res.status_subresource {
                let root = ensure_object(&mut next);
                match old.get("status") {
                    Some(s) => {
                        root.insert("status".into(), s.clone());
                    }
                    None => {
                        root.remove("status");
                    }
                }
            }
            next
        };
        let empty = Map::new();
        let old_meta = metadata(&old).unwrap_or(&empty).clone();
        let meta = metadata_mut(&mut next);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
            "selfLink",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
        meta.remove("resourceVersion");
        let deleting = old_meta.contains_key("deletionTimestamp");
        if deleting {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&next)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(Self::invalid(
                    res,
                    &name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                        ),
                    )],
                ));
            }
        }
        strategy::on_update(res, &old, &mut next);
        normalize_metadata(&mut next);
        let errs = strategy::validate(res, &next, Some(&old));
        if !errs.is_empty() {
            return Err(Self::invalid(res, &name, &errs));
        }
        if !same_spec(&old, &next) {
            let generation = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            metadata_mut(&mut next).insert("generation".into(), json!(generation));
        }
        if same_object(&old, &mut next) {
            return Ok(old);
        }
        if !dry_run {
            let errs = strategy::allocate(res, &mut next, Some(&old), &mut self.alloc);
            if !errs.is_empty() {
                return Err(Self::invalid(res, &name, &errs));
            }
        }
        let is_namespace = res.is("", "namespaces");
        if deleting && !is_namespace && finalizers(&next).is_empty() {
            return Ok(self.remove(res.table, key, next, old, dry_run));
        }
        let out = self.commit(
            res.table,
            key,
            ChangeKind::Modified,
            next,
            Some(old),
            dry_run,
        );
        if is_namespace && deleting && !dry_run {
            self.finalize_namespace(&name);
        }
        Ok(out)
    }

    /// Removes an object for good (a `DELETED` change carrying its last state).
    fn remove(
        &mut self,
        table: usize,
        key: String,
        last: Value,
        prev: Arc<Value>,
        dry_run: bool,
    ) -> Arc<Value> {
        if !dry_run {
            strategy::release(
                self.tables[table].id == ResourceId::services(),
                &prev,
                &mut self.alloc,
            );
        }
        let ns = key.split_once('/').map(|(ns, _)| ns.to_string());
        let out = self.commit(table, key, ChangeKind::Deleted, last, Some(prev), dry_run);
        if let Some(ns) = ns
            && !dry_run
        {
            self.finalize_namespace(&ns);
        }
        out
    }

    /// Deletes an object (`DELETE`): at once without finalizers, else it only gets a
    /// `deletionTimestamp` and goes when an update empties `metadata.finalizers`.
    ///
    /// # Errors
    ///
    /// 404 when absent, 409 when a precondition fails.
    pub(crate) fn delete(
        &mut self,
        res: &Resolved,
        ns: Option<&str>,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let key = obj_key(ns, name);
        let Some(old) = self.tables[res.table].objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&res.group, &res.plural, name));
        };
        if let Some(uid) = &pre.uid {
            let have = meta_str(&old, "uid").unwrap_or("");
            if uid != have {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    ),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            let have = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != have {
                return Err(ApiError::conflict(
                    &res.group,
                    &res.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                    ),
                ));
            }
        }
        Ok(self.delete_key(res.table, key, old, dry_run))
    }

    fn delete_key(
        &mut self,
        table: usize,
        key: String,
        old: Arc<Value>,
        dry_run: bool,
    ) -> Arc<Value> {
        let is_namespace = self.tables[table].id == ResourceId::namespaces();
        if is_namespace || !finalizers(&old).is_empty() {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return old;
            }
            let mut next = (*old).clone();
            let meta = metadata_mut(&mut next);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta.remove("resourceVersion");
            if is_namespace {
                ensure_object(&mut next).insert("status".into(), json!({"phase": "Terminating"}));
            }
            let out = self.commit(
                table,
                key.clone(),
                ChangeKind::Modified,
                next,
                Some(old),
                dry_run,
            );
            if is_namespace && !dry_run {
                // The namespace controller's work, done at once: delete everything inside.
                let ns = key;
                let prefix = format!("{ns}/");
                let mut doomed = Vec::new();
                for (t, tab) in self.tables.iter().enumerate() {
                    for (k, v) in tab
                        .objects
                        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    {
                        if !k.starts_with(&prefix) {
                            break;
                        }
                        doomed.push((t, k.clone(), v.clone()));
                    }
                }
                for (t, k, v) in doomed {
                    self.delete_key(t, k, v, false);
                }
                self.finalize_namespace(&ns);
            }
            return out;
        }
        let last = (*old).clone();
        self.remove(table, key, last, old, dry_run)
    }

    /// Removes a terminating namespace once nothing is left in it and no finalizer holds it.
    fn finalize_namespace(&mut self, ns: &str) {
        let Some(&nst) = self.index.get(&ResourceId::namespaces()) else {
            return;
        };
        let Some(obj) = self.tables[nst].objects.get(ns).cloned() else {
            return;
        };
        if meta_str(&obj, "deletionTimestamp").is_none() || !finalizers(&obj).is_empty() {
            return;
        }
        let prefix = format!("{ns}/");
        let occupied = self.tables.iter().any(|t| {
            t.objects
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
        });
        if occupied {
            return;
        }
        let mut last = (*obj).clone();
        if let Some(spec) = last.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("finalizers".into(), json!([]));
        }
        self.commit(
            nst,
            ns.to_string(),
            ChangeKind::Deleted,
            last,
            Some(obj),
            false,
        );
    }

    /// Deletes every object a filter selects (`DELETE` on a collection).
    pub(crate) fn delete_collection(&mut self, filter: &Filter, dry_run: bool) -> Vec<Arc<Value>> {
        let victims: Vec<(String, Arc<Value>)> = self.tables[filter.table]
            .objects
            .iter()
            .filter(|(k, v)| filter.matches(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        victims
            .into_iter()
            .map(|(k, v)| self.delete_key(filter.table, k, v, dry_run))
            .collect()
    }

    /// Reads one page of a list at version `at` (`floor <= at <= rv`), after key `after`.
    ///
    /// # Errors
    ///
    /// 410 when `at` is older than the history reaches; `expired` gives the message.
    pub(crate) fn list(
        &self,
        filter: &Filter,
        at: u64,
        after: Option<&str>,
        limit: Option<usize>,
        expired: impl FnOnce(u64) -> ApiError,
    ) -> Result<Page, ApiError> {
        if at < self.floor {
            return Err(expired(self.floor));
        }
        let table = &self.tables[filter.table];
        // State at `at` = current state with the changes after `at` undone, newest first, so
        // the oldest change after `at` decides each key.
        let mut overlay: BTreeMap<&str, Option<&Arc<Value>>> = BTreeMap::new();
        if at < self.rv {
            for c in self.history.iter().rev().take_while(|c| c.rv > at) {
                if c.table == filter.table {
                    overlay.insert(&c.key, c.prev.as_ref());
                }
            }
        }
        let prefix = filter.namespace.as_ref().map(|ns| format!("{ns}/"));
        let lower: Bound<&str> = match (after, prefix.as_deref()) {
            (Some(a), Some(p)) if a < p => Bound::Included(p),
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(p)) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let mut cur = table
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .peekable();
        let mut ov = overlay
            .range::<&str, _>((lower, Bound::Unbounded))
            .peekable();
        let mut items = Vec::new();
        let mut last_key: Option<&str> = None;
        let mut more_after: Option<String> = None;
        let mut remaining = 0u64;
        let count_rest = filter.labels.is_empty() && filter.fields.is_empty();
        loop {
            let (key, value): (&str, Option<&Arc<Value>>) = match (cur.peek(), ov.peek()) {
                (None, None) => break,
                (Some((ck, cv)), None) => {
                    let r = (ck.as_str(), Some(*cv));
                    cur.next();
                    r
                }
                (None, Some((ok, ovv))) => {
                    let r = (**ok, **ovv);
                    ov.next();
                    r
                }
                (Some((ck, cv)), Some((ok, ovv))) => match ck.as_str().cmp(**ok) {
                    std::cmp::Ordering::Less => {
                        let r = (ck.as_str(), Some(*cv));
                        cur.next();
                        r
                    }
                    std::cmp::Ordering::Equal => {
                        let r = (**ok, **ovv);
                        cur.next();
                        ov.next();
                        r
                    }
                    std::cmp::Ordering::Greater => {
                        let r = (**ok, **ovv);
                        ov.next();
                        r
                    }
                },
            };
            if let Some(p) = &prefix
                && !key.starts_with(p.as_str())
            {
                break;
            }
            let Some(v) = value else { continue };
            if !filter.matches(key, v) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                if more_after.is_none() {
                    more_after = last_key.map(str::to_string);
                }
                if !count_rest {
                    break;
                }
                remaining += 1;
                continue;
            }
            items.push(v.clone());
            last_key = Some(key);
        }
        Ok(Page {
            items,
            rv: at,
            remaining: (more_after.is_some() && count_rest).then_some(remaining),
            more_after,
        })
    }

    /// The objects a filter selects now, and the version they are at.
    pub(crate) fn snapshot(&self, filter: &Filter) -> (Vec<Arc<Value>>, u64) {
        match self.list(filter, self.rv, None, None, |_| ApiError::expired("")) {
            Ok(page) => (page.items, self.rv),
            Err(_) => (Vec::new(), self.rv),
        }
    }

    /// Up to `max` changes after version `cursor`; `None` when they are no longer all kept.
    pub(crate) fn changes_after(&self, cursor: u64, max: usize) -> Option<Vec<Change>> {
        if cursor < self.floor {
            return None;
        }
        let start = usize::try_from(cursor - self.floor).unwrap_or(usize::MAX);
        let end = start.saturating_add(max).min(self.history.len());
        if start >= end {
            return Some(Vec::new());
        }
        Some(self.history.range(start..end).cloned().collect())
    }

    /// Number of changes kept.
    pub(crate) fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Looks a table up without creating it.
    pub(crate) fn table_index(&self, id: &ResourceId) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// `checkName` and the namespace rule of updates: the body's name must be the path's; its
/// namespace, if set, the path's.
fn check_name(
    res: &Resolved,
    ns: Option<&str>,
    name: &str,
    body: &mut Value,
) -> Result<(), ApiError> {
    let meta = metadata_mut(body);
    let have = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if have != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({have}) does not match the name on the URL ({name})"
        )));
    }
    match (res.namespaced, ns) {
        (true, Some(ns)) => {
            let have = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !have.is_empty() && have != ns {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({have}) does not match the namespace on the request ({ns})"
                )));
            }
            meta.insert("namespace".into(), json!(ns));
        }
        _ => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// An update carrying `metadata.resourceVersion` or `metadata.uid` is conditional on them.
fn check_preconditions(
    res: &Resolved,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if let Some(rv) = meta_str(new, "resourceVersion")
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::stale(&res.group, &res.plural, name));
    }
    if let Some(uid) = meta_str(new, "uid") {
        let have = meta_str(old, "uid").unwrap_or("");
        if uid != have {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    Ok(())
}
