//! Loading MetalLB-shaped objects: multi-document YAML manifests ([`parse_manifests`]) and
//! single objects as a `DynamicObject` watch delivers them ([`from_value`]).
//!
//! Accepted: `apiVersion` `metallb.io/<v>` or `sluice.io/<v>` with kind `IPAddressPool`,
//! `BGPAdvertisement`, `L2Advertisement`, `Community` (`v1beta1`) and `BGPPeer` (`v1beta2`,
//! and MetalLB's deprecated `v1beta1`, whose fields are a subset), so a MetalLB user's
//! manifests load unchanged or with the group switched. Documents of other groups (a
//! `Secret`, a `Namespace`, a `Deployment`) and MetalLB kinds Sluice does not use
//! (`BFDProfile`, `ConfigurationState`, `ServiceBGPStatus`, `ServiceL2Status`) come back as
//! [`Manifest::Other`] for the caller to skip. `kind: List` documents (what
//! `kubectl get -o yaml` prints) are expanded into their items; empty documents are skipped.
//!
//! Each object is checked as the API server would check it against the CRD schema (types,
//! ranges, required and unknown fields), then as MetalLB's controller would (the kinds'
//! `validate`). `status` is not input and is dropped.
//!
//! Guarantee: every [`Manifest`] returned passed its kind's `validate`; every error names
//! the document (counted from 0, as yq's `documentIndex`), the kind and name, the field path
//! and the reason.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::crd::{
    BGPAdvertisement, BGPPeer, Community, FieldError, GROUP, IPAddressPool, L2Advertisement,
    METALLB_GROUP, crds,
};

/// One loaded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// An address pool.
    IPAddressPool(Box<IPAddressPool>),
    /// A BGP peer.
    BGPPeer(Box<BGPPeer>),
    /// A BGP advertisement.
    BGPAdvertisement(Box<BGPAdvertisement>),
    /// An L2 advertisement.
    L2Advertisement(Box<L2Advertisement>),
    /// Community aliases.
    Community(Box<Community>),
    /// Anything else: not Sluice's to load.
    Other {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// `metadata.name`, when there is one.
        name: Option<String>,
    },
}

// === impl Manifest ===

impl Manifest {
    /// The object's kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        match self {
            Manifest::IPAddressPool(_) => "IPAddressPool",
            Manifest::BGPPeer(_) => "BGPPeer",
            Manifest::BGPAdvertisement(_) => "BGPAdvertisement",
            Manifest::L2Advertisement(_) => "L2Advertisement",
            Manifest::Community(_) => "Community",
            Manifest::Other { kind, .. } => kind,
        }
    }

    /// The object's name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        let meta = match self {
            Manifest::IPAddressPool(o) => &o.metadata,
            Manifest::BGPPeer(o) => &o.metadata,
            Manifest::BGPAdvertisement(o) => &o.metadata,
            Manifest::L2Advertisement(o) => &o.metadata,
            Manifest::Community(o) => &o.metadata,
            Manifest::Other { name, .. } => return name.as_deref(),
        };
        meta.name.as_deref()
    }
}

/// Why a manifest did not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("document {index}: not valid YAML: {reason}")]
    Yaml {
        /// The document, counted from 0.
        index: usize,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// An object is malformed or fails validation.
    #[error("{}", describe(*.index, .kind, .name, .field, .reason))]
    Invalid {
        /// The document, counted from 0 (`None` for [`from_value`]).
        index: Option<usize>,
        /// The object's kind (empty when it has none).
        kind: String,
        /// The object's name (empty when it has none).
        name: String,
        /// The field (`spec.addresses[1]`; `items[2].spec…` inside a `List`).
        field: String,
        /// Why.
        reason: String,
    },
}

fn describe(index: Option<usize>, kind: &str, name: &str, field: &str, reason: &str) -> String {
    let mut out = String::new();
    if let Some(i) = index {
        out.push_str(&format!("document {i}"));
    }
    if !kind.is_empty() {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(kind);
        if !name.is_empty() {
            out.push_str(&format!(" {name:?}"));
        }
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    if !field.is_empty() {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(reason);
    out
}

/// Loads every document of a (multi-document) YAML text.
///
/// # Errors
/// The first document that is not YAML, or whose object is malformed or invalid.
pub fn parse_manifests(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Yaml {
            index,
            reason: e.to_string(),
        })?;
        if yaml.is_null() {
            continue;
        }
        let value = serde_json::to_value(&yaml).map_err(|e| ManifestError::Yaml {
            index,
            reason: e.to_string(),
        })?;
        match list_items(&value) {
            Some(items) => {
                for (j, item) in items.iter().enumerate() {
                    let m = convert(item.clone())
                        .map_err(|f| f.into_error(Some(index), &format!("items[{j}]")))?;
                    out.push(m);
                }
            }
            None => out.push(convert(value).map_err(|f| f.into_error(Some(index), ""))?),
        }
    }
    Ok(out)
}

/// Loads one object, as a watch of `DynamicObject`s of either group delivers it.
///
/// # Errors
/// As [`parse_manifests`], without a document index.
pub fn from_value(v: &Value) -> Result<Manifest, ManifestError> {
    convert(v.clone()).map_err(|f| f.into_error(None, ""))
}

/// As [`from_value`], for an object that may lack `apiVersion` and `kind` (items of a list
/// response, a `DynamicObject` whose `types` is `None`): those fields are taken from
/// `api_version` and `kind` when absent. When present, they are used as they are.
///
/// # Errors
/// As [`from_value`].
pub fn from_value_as(v: &Value, api_version: &str, kind: &str) -> Result<Manifest, ManifestError> {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for (field, value) in [("apiVersion", api_version), ("kind", kind)] {
            if o.get(field).is_none_or(Value::is_null) {
                o.insert(field.to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    convert(v).map_err(|f| f.into_error(None, ""))
}

/// A `List` (core `v1`, or `<Kind>List` of the two groups): its items.
fn list_items(v: &Value) -> Option<&Vec<Value>> {
    let kind = v.get("kind")?.as_str()?;
    let api_version = v.get("apiVersion")?.as_str()?;
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let is_list = (kind == "List" && api_version == "v1")
        || (kind.ends_with("List") && (group == GROUP || group == METALLB_GROUP));
    if is_list {
        v.get("items")?.as_array()
    } else {
        None
    }
}

/// What went wrong with one object, before it is placed in the stream.
struct Failure {
    kind: String,
    name: String,
    error: FieldError,
}

// === impl Failure ===

impl Failure {
    fn into_error(self, index: Option<usize>, prefix: &str) -> ManifestError {
        let error = if prefix.is_empty() {
            self.error
        } else {
            self.error.under(prefix)
        };
        ManifestError::Invalid {
            index,
            kind: self.kind,
            name: self.name,
            field: error.field,
            reason: error.reason,
        }
    }
}

/// The kinds Sluice loads: kind, served versions (the CRD's first), whether `spec` may be
/// left out (MetalLB's `json:"spec,omitempty"`).
const KINDS: [(&str, &[&str], bool); 5] = [
    ("IPAddressPool", &["v1beta1"], false),
    ("BGPPeer", &["v1beta2", "v1beta1"], true),
    ("BGPAdvertisement", &["v1beta1"], true),
    ("L2Advertisement", &["v1beta1"], true),
    ("Community", &["v1beta1"], true),
];

/// MetalLB kinds Sluice has no use for; returned as [`Manifest::Other`].
const METALLB_ONLY_KINDS: [&str; 4] = [
    "BFDProfile",
    "ConfigurationState",
    "ServiceBGPStatus",
    "ServiceL2Status",
];

/// The fields of MetalLB's deprecated `BGPPeer` `v1beta1` spec.
const BGP_PEER_V1BETA1_FIELDS: [&str; 12] = [
    "myASN",
    "peerASN",
    "peerAddress",
    "sourceAddress",
    "peerPort",
    "holdTime",
    "keepaliveTime",
    "routerID",
    "nodeSelectors",
    "password",
    "bfdProfile",
    "ebgpMultiHop",
];

/// The `spec` schema of each kind, from the generated CRDs.
static SPEC_SCHEMAS: LazyLock<BTreeMap<String, JSONSchemaProps>> = LazyLock::new(|| {
    crds()
        .into_iter()
        .filter_map(|(_, crd)| {
            let kind = crd.spec.names.kind.clone();
            let spec = crd
                .spec
                .versions
                .into_iter()
                .next()?
                .schema?
                .open_api_v3_schema?
                .properties?
                .remove("spec")?;
            Some((kind, spec))
        })
        .collect()
});

fn convert(mut v: Value) -> Result<Manifest, Failure> {
    let (kind, name) = match v.as_object() {
        Some(o) => (
            o.get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            o.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        None => (String::new(), None),
    };
    let fail = |field: &str, reason: String| Failure {
        kind: kind.clone(),
        name: name.clone().unwrap_or_default(),
        error: FieldError::new(field, reason),
    };
    let Some(obj) = v.as_object_mut() else {
        return Err(fail(
            "",
            "a manifest must be a mapping with apiVersion, kind and metadata".into(),
        ));
    };
    let api_version = match obj.get("apiVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(fail("apiVersion", "required".into())),
    };
    if kind.is_empty() {
        return Err(fail("kind", "required".into()));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    if group != GROUP && group != METALLB_GROUP {
        return Ok(Manifest::Other {
            api_version,
            kind,
            name,
        });
    }
    let Some((_, versions, spec_optional)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        if group == METALLB_GROUP && METALLB_ONLY_KINDS.contains(&kind.as_str()) {
            return Ok(Manifest::Other {
                api_version,
                kind,
                name,
            });
        }
        let hint = if kind == "AddressPool" {
            " (MetalLB replaced AddressPool with IPAddressPool plus L2Advertisement or \
             BGPAdvertisement)"
        } else {
            ""
        };
        return Err(fail(
            "kind",
            format!(
                "{group} has no kind {kind:?} that Sluice loads; known: IPAddressPool, BGPPeer, \
                 BGPAdvertisement, L2Advertisement, Community{hint}"
            ),
        ));
    };
    if !versions.contains(&version) {
        return Err(fail(
            "apiVersion",
            format!(
                "{kind} is served as {group}/{}, not {version:?}",
                versions.join(" or ")
            ),
        ));
    }
    if name.as_deref().is_none_or(str::is_empty) {
        return Err(fail("metadata.name", "required".into()));
    }
    obj.remove("status");
    match obj.get_mut("spec") {
        None | Some(Value::Null) if *spec_optional => {
            obj.insert("spec".into(), Value::Object(Map::new()));
        }
        None | Some(Value::Null) => return Err(fail("spec", "required".into())),
        Some(spec) => prune_nulls(spec),
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(schema) = SPEC_SCHEMAS.get(&kind) {
        check(&spec, schema, "spec").map_err(|e| fail(&e.field, e.reason))?;
    }
    if kind == "BGPPeer" && version == "v1beta1" {
        check_bgp_peer_v1beta1(&spec).map_err(|e| fail(&e.field, e.reason))?;
    }
    let with = |e: FieldError| Failure {
        kind: kind.clone(),
        name: name.clone().unwrap_or_default(),
        error: e,
    };
    Ok(match kind.as_str() {
        "IPAddressPool" => {
            let o: IPAddressPool = typed(v).map_err(with)?;
            o.validate().map_err(with)?;
            Manifest::IPAddressPool(Box::new(o))
        }
        "BGPPeer" => {
            let o: BGPPeer = typed(v).map_err(with)?;
            o.validate().map_err(with)?;
            Manifest::BGPPeer(Box::new(o))
        }
        "BGPAdvertisement" => {
            let o: BGPAdvertisement = typed(v).map_err(with)?;
            o.validate().map_err(with)?;
            Manifest::BGPAdvertisement(Box::new(o))
        }
        "L2Advertisement" => {
            let o: L2Advertisement = typed(v).map_err(with)?;
            o.validate().map_err(with)?;
            Manifest::L2Advertisement(Box::new(o))
        }
        _ => {
            let o: Community = typed(v).map_err(with)?;
            o.validate().map_err(with)?;
            Manifest::Community(Box::new(o))
        }
    })
}

/// Deserializes a schema-checked object; what serde still refuses is named by the part
/// (`metadata` or `spec`) it is in.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, FieldError> {
    if let Some(meta) = v.get("metadata") {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
            meta.clone(),
        )
        .map_err(|e| FieldError::new("metadata", e.to_string()))?;
    }
    serde_json::from_value(v).map_err(|e| FieldError::new("spec", e.to_string()))
}

/// MetalLB's `v1beta1` `BGPPeer`: only its own fields, `peerASN` and `peerAddress` required.
fn check_bgp_peer_v1beta1(spec: &Value) -> Result<(), FieldError> {
    let Some(o) = spec.as_object() else {
        return Ok(());
    };
    for k in o.keys() {
        if !BGP_PEER_V1BETA1_FIELDS.contains(&k.as_str()) {
            return Err(FieldError::new(
                format!("spec.{k}"),
                "not a field of BGPPeer v1beta1 (it is one of v1beta2: change apiVersion)",
            ));
        }
    }
    for k in ["peerASN", "peerAddress"] {
        if !o.contains_key(k) {
            return Err(FieldError::new(format!("spec.{k}"), "required in v1beta1"));
        }
    }
    Ok(())
}

/// Drops `null` members of objects, as the API server prunes them from fields that are not
/// nullable (`nodeSelectors:` with nothing after it).
fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(prune_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// How a JSON value reads in an error.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Checks `v` against a structural schema the way the API server does: types, integer
/// ranges and formats, enums, required and unknown fields.
fn check(v: &Value, s: &JSONSchemaProps, path: &str) -> Result<(), FieldError> {
    let expected =
        |what: &str| FieldError::new(path, format!("expected {what}, found {}", shown(v)));
    if v.is_null() {
        return if s.nullable == Some(true) {
            Ok(())
        } else {
            Err(FieldError::new(path, "must not be null"))
        };
    }
    if s.x_kubernetes_int_or_string == Some(true) {
        return if v.is_string() || v.is_i64() || v.is_u64() {
            Ok(())
        } else {
            Err(expected("an integer or a string"))
        };
    }
    match s.type_.as_deref() {
        Some("object") => {
            let Value::Object(m) = v else {
                return Err(expected("a mapping"));
            };
            if let Some(props) = &s.properties {
                for (k, x) in m {
                    match props.get(k) {
                        Some(ps) => check(x, ps, &child(path, k))?,
                        None if s.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                        None => {
                            let known: Vec<&str> = props.keys().map(String::as_str).collect();
                            return Err(FieldError::new(
                                child(path, k),
                                format!("unknown field; expected one of: {}", known.join(", ")),
                            ));
                        }
                    }
                }
            } else if let Some(JSONSchemaPropsOrBool::Schema(ap)) = &s.additional_properties {
                for (k, x) in m {
                    check(x, ap, &child(path, k))?;
                }
            }
            for r in s.required.iter().flatten() {
                if !m.contains_key(r) {
                    return Err(FieldError::new(child(path, r), "required"));
                }
            }
            Ok(())
        }
        Some("array") => {
            let Value::Array(a) = v else {
                return Err(expected("a list"));
            };
            if let Some(JSONSchemaPropsOrArray::Schema(is)) = &s.items {
                for (i, x) in a.iter().enumerate() {
                    check(x, is, &format!("{path}[{i}]"))?;
                }
            }
            Ok(())
        }
        Some("string") => {
            let Value::String(text) = v else {
                return Err(expected("a string"));
            };
            if let Some(allowed) = &s.enum_ {
                let allowed: Vec<&str> = allowed.iter().filter_map(|j| j.0.as_str()).collect();
                if !allowed.is_empty() && !allowed.contains(&text.as_str()) {
                    return Err(FieldError::new(
                        path,
                        format!("{text:?} is not one of: {}", allowed.join(", ")),
                    ));
                }
            }
            Ok(())
        }
        Some("integer") => {
            let n = match (v.as_i64(), v.as_u64()) {
                (Some(i), _) => i128::from(i),
                (None, Some(u)) => i128::from(u),
                _ => return Err(expected("an integer")),
            };
            let bounds: Option<(i128, i128)> = match s.format.as_deref() {
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                Some("uint64" | "uint") => Some((0, u64::MAX.into())),
                _ => None,
            };
            if let Some((lo, hi)) = bounds
                && (n < lo || n > hi)
            {
                return Err(FieldError::new(
                    path,
                    format!("{n} is out of range ({lo} to {hi})"),
                ));
            }
            let f = v.as_f64().unwrap_or_default();
            if let Some(min) = s.minimum
                && f < min
            {
                return Err(FieldError::new(
                    path,
                    format!("{n} is below the minimum {min}"),
                ));
            }
            if let Some(max) = s.maximum
                && f > max
            {
                return Err(FieldError::new(
                    path,
                    format!("{n} is above the maximum {max}"),
                ));
            }
            Ok(())
        }
        Some("number") if !v.is_number() => Err(expected("a number")),
        Some("boolean") if !v.is_boolean() => Err(expected("a boolean")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Any JSON tree.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9:./-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("addresses".to_owned()),
                        Just("serviceAllocation".to_owned()),
                        Just("matchExpressions".to_owned()),
                        Just("myASN".to_owned()),
                        Just("communities".to_owned()),
                        "[a-zA-Z]{1,8}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the spec, loading returns a manifest or an error and never panics.
        #[test]
        fn arbitrary_specs_never_panic(
            kind in prop_oneof![
                Just("IPAddressPool"), Just("BGPPeer"), Just("BGPAdvertisement"),
                Just("L2Advertisement"), Just("Community")
            ],
            spec in arb_json(),
        ) {
            let version = if kind == "BGPPeer" { "v1beta2" } else { "v1beta1" };
            let v = serde_json::json!({
                "apiVersion": format!("metallb.io/{version}"),
                "kind": kind,
                "metadata": {"name": "x"},
                "spec": spec,
            });
            let _ = from_value(&v);
        }

        /// Arbitrary text never panics the YAML loader.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let _ = parse_manifests(&text);
        }
    }

    #[test]
    fn empty_documents_and_other_kinds() {
        let m = parse_manifests(
            "---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n",
        )
        .unwrap();
        assert_eq!(
            m,
            [Manifest::Other {
                api_version: "v1".into(),
                kind: "Secret".into(),
                name: Some("s".into())
            }]
        );
    }

    #[test]
    fn errors_name_document_kind_name_and_field() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\n\
                    apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: web\n\
                    spec:\n  addresses: [10.0.0.0/24]\n  autoAssign: 'yes'\n";
        let e = parse_manifests(text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 1, IPAddressPool \"web\": spec.autoAssign: expected a boolean, found the \
             string \"yes\""
        );
        let e = parse_manifests(
            "apiVersion: sluice.io/v1beta2\nkind: BGPPeer\nmetadata: {name: p}\n\
             spec: {myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, peerPort: 20000}\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 0, BGPPeer \"p\": spec.peerPort: 20000 is above the maximum 16384"
        );
        let e = parse_manifests(
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l}\n\
             spec: {interfaces: [eth0], nodeSelector: []}\n",
        )
        .unwrap_err();
        let ManifestError::Invalid { field, reason, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(field, "spec.nodeSelector");
        assert!(
            reason.starts_with("unknown field; expected one of:"),
            "{reason}"
        );
        let e = parse_manifests("a: [1, 2\n").unwrap_err();
        assert!(matches!(e, ManifestError::Yaml { index: 0, .. }), "{e}");
        let e = from_value(&serde_json::json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.9-10.0.0.1"]}
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "IPAddressPool \"p\": spec.addresses[0]: \"10.0.0.9-10.0.0.1\": the first address \
             is above the last"
        );
    }

    #[test]
    fn objects_without_type_meta_take_the_given_one() {
        let v =
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/24"]}});
        assert!(from_value(&v).is_err());
        let m = from_value_as(&v, "sluice.io/v1beta1", "IPAddressPool").unwrap();
        assert_eq!((m.kind(), m.name()), ("IPAddressPool", Some("p")));
    }

    #[test]
    fn versions_and_kinds() {
        let load = |api: &str, kind: &str, spec: &str| {
            parse_manifests(&format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {spec}\n"
            ))
        };
        let e = load(
            "metallb.io/v1beta2",
            "IPAddressPool",
            "{addresses: [10.0.0.0/8]}",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("apiVersion: IPAddressPool is served as"),
            "{e}"
        );
        assert!(load("metallb.io/v1beta1", "AddressPool", "{}").is_err());
        assert!(load("sluice.io/v1beta1", "Whatever", "{}").is_err());
        let m = load("metallb.io/v1beta1", "BFDProfile", "{receiveInterval: 380}").unwrap();
        assert_eq!(m[0].kind(), "BFDProfile");
        // BGPPeer v1beta1 loads, with its own field set.
        let m = load(
            "metallb.io/v1beta1",
            "BGPPeer",
            "{myASN: 64512, peerASN: 64512, peerAddress: 10.0.0.1, holdTime: 90s}",
        )
        .unwrap();
        let Manifest::BGPPeer(p) = &m[0] else {
            panic!("{m:?}")
        };
        assert_eq!(p.spec.hold_time.as_deref(), Some("90s"));
        let e = load(
            "metallb.io/v1beta1",
            "BGPPeer",
            "{myASN: 64512, peerASN: 64512, peerAddress: 10.0.0.1, vrf: red}",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.vrf: not a field of BGPPeer v1beta1"),
            "{e}"
        );
        // A missing spec is fine where MetalLB's is optional, not on a pool.
        let e = parse_manifests(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\n",
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("spec: required"), "{e}");
    }

    #[test]
    fn lists_expand_and_status_is_dropped() {
        let text = "apiVersion: v1\nkind: List\nitems:\n\
                    - apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: a}\n  \
                    spec: {addresses: [10.0.0.0/24]}\n  status: {assignedIPv4: 3}\n\
                    - apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: b}\n  \
                    spec: {addresses: [10.0.0.0/33]}\n";
        let e = parse_manifests(text).unwrap_err();
        let ManifestError::Invalid { field, name, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(
            (field.as_str(), name.as_str()),
            ("items[1].spec.addresses[0]", "b")
        );
        let m = parse_manifests(&text.replace("10.0.0.0/33", "10.1.0.0/24")).unwrap();
        let Manifest::IPAddressPool(p) = &m[0] else {
            panic!()
        };
        assert!(p.status.is_none());
        assert_eq!(m[1].name(), Some("b"));
    }
}
