//! How stored objects are written out: with the `apiVersion` of the path they are read
//! through, without type meta inside lists of built-in resources (as the real server writes
//! them), or as `PartialObjectMetadata` when the client asks for metadata only.
//!
//! Serialisation goes straight from the stored `Value` to bytes; nothing is cloned for the
//! common case.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// How one request wants objects written.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The `apiVersion` of the request path.
    pub api_version: String,
    /// The resource's kind (for bookmarks and list kinds).
    pub kind: String,
    /// `Accept: …;as=PartialObjectMetadata` (or `…List`).
    pub metadata_only: bool,
    /// List items omit `kind`/`apiVersion` (built-in resources).
    pub strip_item_type: bool,
}

// === impl View ===

impl View {
    /// One object as a top-level document or watch event object.
    pub(crate) fn object<'a>(&'a self, obj: &'a Value) -> Rendered<'a> {
        Rendered {
            obj,
            view: self,
            in_list: false,
            rv: None,
        }
    }

    /// One object inside a list.
    pub(crate) fn item<'a>(&'a self, obj: &'a Value) -> Rendered<'a> {
        Rendered {
            obj,
            view: self,
            in_list: true,
            rv: None,
        }
    }

    /// The list `kind`.
    pub(crate) fn list_kind(&self) -> String {
        if self.metadata_only {
            "PartialObjectMetadataList".into()
        } else {
            format!("{}List", self.kind)
        }
    }

    /// The list `apiVersion`.
    pub(crate) fn list_api_version(&self) -> &str {
        if self.metadata_only {
            "meta.k8s.io/v1"
        } else {
            &self.api_version
        }
    }

    /// `kind` and `apiVersion` of objects in watch events and bookmarks.
    pub(crate) fn object_type(&self) -> (&str, &str) {
        if self.metadata_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            (&self.kind, &self.api_version)
        }
    }
}

/// A stored object as one request sees it.
#[derive(Debug)]
pub(crate) struct Rendered<'a> {
    obj: &'a Value,
    view: &'a View,
    in_list: bool,
    /// Replaces `metadata.resourceVersion` (a watch `DELETED` for an object that left a
    /// selector carries the old content at the event's version).
    rv: Option<u64>,
}

impl Rendered<'_> {
    /// The same object with another `metadata.resourceVersion`.
    pub(crate) fn at_version(mut self, rv: u64) -> Self {
        self.rv = Some(rv);
        self
    }
}

struct Meta<'a> {
    meta: &'a Map<String, Value>,
    rv: Option<u64>,
}

impl Serialize for Meta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.meta {
            if k == "resourceVersion"
                && let Some(rv) = self.rv
            {
                m.serialize_entry(k, &rv.to_string())?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        if self.rv.is_some() && !self.meta.contains_key("resourceVersion") {
            m.serialize_entry("resourceVersion", &self.rv.map(|r| r.to_string()))?;
        }
        m.end()
    }
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(fields) = self.obj.as_object() else {
            return self.obj.serialize(s);
        };
        let empty = Map::new();
        let meta = Meta {
            meta: fields
                .get("metadata")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
            rv: self.rv,
        };
        let mut m = s.serialize_map(None)?;
        if self.view.metadata_only {
            m.serialize_entry("kind", "PartialObjectMetadata")?;
            m.serialize_entry("apiVersion", "meta.k8s.io/v1")?;
            m.serialize_entry("metadata", &meta)?;
            return m.end();
        }
        let typed = !(self.in_list && self.view.strip_item_type);
        if typed {
            m.serialize_entry("apiVersion", &self.view.api_version)?;
            if let Some(kind) = fields.get("kind") {
                m.serialize_entry("kind", kind)?;
            } else {
                m.serialize_entry("kind", &self.view.kind)?;
            }
        }
        for (k, v) in fields {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => m.serialize_entry(k, &meta)?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}
