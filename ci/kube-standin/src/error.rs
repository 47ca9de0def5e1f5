//! API errors as the apiserver reports them: a `meta.k8s.io/v1` `Status` with the HTTP code,
//! the machine-readable `reason` and, where the real server gives them, `details`.
//!
//! The constructors mirror `k8s.io/apimachinery/pkg/api/errors` (`NewNotFound`,
//! `NewAlreadyExists`, `NewConflict`, `NewInvalid`, `NewResourceExpired`, …) so that messages and
//! reasons match what a client sees from a real cluster.

use std::fmt;

use serde_json::{Map, Value, json};

/// An error answered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, `Invalid`, …); empty for an unclassified 500,
    /// as the real server leaves it.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, where the real server fills it.
    pub details: Option<Value>,
}

/// One field error of a 422 `Invalid` answer (`field.Error` in apimachinery).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    /// The field path, `spec.ports[0].port`.
    pub field: String,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
    /// The human-readable detail after the kind.
    pub detail: String,
}

/// The kinds of field error the stand-in reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldErrorKind {
    /// `Invalid value: <value>`; the value is already rendered the way Go's `%#v`-ish
    /// formatting shows it (strings quoted).
    Invalid(String),
    /// `Required value`.
    Required,
    /// `Forbidden`.
    Forbidden,
    /// `Unsupported value: <value>`.
    NotSupported(String),
}

// === impl FieldError ===

impl FieldError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: &Value,
        detail: impl Into<String>,
    ) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(shown),
            detail: detail.into(),
        }
    }

    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub(crate) fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(format!("{value:?}")),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// The text after the field path, as in the `causes[].message` of the real server.
    fn body(&self) -> String {
        let head = match &self.kind {
            FieldErrorKind::Invalid(v) => format!("Invalid value: {v}"),
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::NotSupported(v) => format!("Unsupported value: {v}"),
        };
        if self.detail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.detail)
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotSupported(_) => "FieldValueNotSupported",
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

// === impl ApiError ===

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 `BadRequest`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 `Forbidden` on an object (`NewForbidden`).
    pub(crate) fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = qualify(group, resource);
        Self::new(
            403,
            "Forbidden",
            format!("{qualified} {name:?} is forbidden: {why}"),
        )
        .with_details(details(group, resource, name))
    }

    /// 404 `NotFound` for an object (`NewNotFound`).
    pub(crate) fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualify(group, resource);
        Self::new(404, "NotFound", format!("{qualified} {name:?} not found"))
            .with_details(details(group, resource, name))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 405 `MethodNotAllowed`.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 `AlreadyExists` (`NewAlreadyExists`).
    pub(crate) fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualify(group, resource);
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} {name:?} already exists"),
        )
        .with_details(details(group, resource, name))
    }

    /// 409 `Conflict` (`NewConflict`): "Operation cannot be fulfilled on …".
    pub(crate) fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = qualify(group, resource);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} {name:?}: {why}"),
        )
        .with_details(details(group, resource, name))
    }

    /// The `Conflict` of an update carrying a stale `metadata.resourceVersion`.
    pub(crate) fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 410 `Expired` (`NewResourceExpired`).
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 `UnsupportedMediaType` for a patch body in a format the resource does not take.
    pub(crate) fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 422 `Invalid` (`NewInvalid`) for an object of kind `kind` (in `group`).
    pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let aggregate = match errors {
            [one] => one.to_string(),
            many => {
                let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
                format!("[{}]", parts.join(", "))
            }
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        let mut d = Map::new();
        d.insert("name".into(), Value::String(name.to_string()));
        if !group.is_empty() {
            d.insert("group".into(), Value::String(group.to_string()));
        }
        d.insert("kind".into(), Value::String(kind.to_string()));
        d.insert("causes".into(), Value::Array(causes));
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} {name:?} is invalid: {aggregate}"),
        )
        .with_details(Value::Object(d))
    }

    /// 422 without a kind, as the patch handler reports a JSON patch that does not apply.
    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "", message)
    }

    /// 500 with an empty reason: what the real server answers for an error it does not
    /// classify (e.g. a create carrying `metadata.resourceVersion`).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// 504 `Timeout` for a `resourceVersion` newer than the store has reached
    /// (`NewTooLargeResourceVersionError`).
    pub(crate) fn too_large_resource_version(wanted: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {wanted}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }))
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), Value::String("Status".into()));
        m.insert("apiVersion".into(), Value::String("v1".into()));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), Value::String("Failure".into()));
        m.insert("message".into(), Value::String(self.message.clone()));
        if !self.reason.is_empty() {
            m.insert("reason".into(), Value::String(self.reason.clone()));
        }
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), Value::from(self.code));
        Value::Object(m)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `resource.group`, or `resource` for the core group (`schema.GroupResource.String()`).
pub(crate) fn qualify(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), Value::String(name.to_string()));
    if !group.is_empty() {
        d.insert("group".into(), Value::String(group.to_string()));
    }
    d.insert("kind".into(), Value::String(resource.to_string()));
    Value::Object(d)
}
