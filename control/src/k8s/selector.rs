//! Kubernetes label selectors (`metav1.LabelSelector`): `matchLabels` plus `matchExpressions`
//! with the operators `In`, `NotIn`, `Exists` and `DoesNotExist`, as MetalLB's pools and
//! advertisements use them to pick namespaces, services, nodes and pools.
//!
//! Guarantee: a [`Selector`] only exists for a selector the API server would accept (valid
//! label keys and values, a known operator, values present exactly for `In`/`NotIn`), and
//! [`Selector::matches`] has the API server's meaning: requirements are ANDed, `NotIn` and
//! `DoesNotExist` match objects without the label, and an empty selector matches everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::crd::FieldError;

/// A validated label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// Sorted and deduplicated, so that two equal selectors compare equal.
    requirements: Vec<Requirement>,
}

/// One requirement: a key and what its value must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

// === impl Selector ===

impl Selector {
    /// The selector that matches every label set (what an empty `LabelSelector` means).
    #[must_use]
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Whether this selector matches every label set.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Validates `sel`. Field paths in errors are relative to the selector
    /// (`matchExpressions[1].operator`).
    ///
    /// # Errors
    /// A label key or value that is not a valid Kubernetes label, an unknown operator, values
    /// given to `Exists`/`DoesNotExist` or missing for `In`/`NotIn`, or a value listed twice.
    pub fn try_from_label_selector(sel: &LabelSelector) -> Result<Self, FieldError> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            let field = format!("matchLabels.{key}");
            check_key(key).map_err(|r| FieldError::new(&field, r))?;
            check_value(value).map_err(|r| FieldError::new(&field, r))?;
            requirements.push(Requirement {
                key: key.clone(),
                op: Op::In(BTreeSet::from([value.clone()])),
            });
        }
        let mut seen = BTreeSet::new();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let f = format!("matchExpressions[{i}]");
            check_key(&e.key).map_err(|r| FieldError::new(format!("{f}.key"), r))?;
            let values = e.values.as_deref().unwrap_or_default();
            let mut set = BTreeSet::new();
            for (j, v) in values.iter().enumerate() {
                check_value(v).map_err(|r| FieldError::new(format!("{f}.values[{j}]"), r))?;
                if !set.insert(v.clone()) {
                    return Err(FieldError::new(
                        format!("{f}.values[{j}]"),
                        format!("{v:?} is listed twice"),
                    ));
                }
            }
            let op = match e.operator.as_str() {
                "In" | "NotIn" if set.is_empty() => {
                    return Err(FieldError::new(
                        format!("{f}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !set.is_empty() => {
                    return Err(FieldError::new(
                        format!("{f}.values"),
                        format!("operator {} takes no values", e.operator),
                    ));
                }
                "In" => Op::In(set),
                "NotIn" => Op::NotIn(set),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(FieldError::new(
                        format!("{f}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            let req = Requirement {
                key: e.key.clone(),
                op,
            };
            if !seen.insert(req.clone()) {
                return Err(FieldError::new(f, "the same expression is listed twice"));
            }
            requirements.push(req);
        }
        requirements.sort();
        requirements.dedup();
        Ok(Selector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::In(set) => value.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

impl fmt::Display for Selector {
    /// The API server's string form (`app in (a,b),tier=web,!legacy`); empty for everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
            match &r.op {
                Op::In(set) if set.len() == 1 => write!(f, "{}={}", r.key, list(set))?,
                Op::In(set) => write!(f, "{} in ({})", r.key, list(set))?,
                Op::NotIn(set) => write!(f, "{} notin ({})", r.key, list(set))?,
                Op::Exists => write!(f, "{}", r.key)?,
                Op::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

/// Validates a list of selectors found at `field` (e.g. `spec.nodeSelectors`), refusing a
/// selector listed twice as MetalLB does.
///
/// # Errors
/// The first invalid selector, with its full field path.
pub fn parse_selectors(list: &[LabelSelector], field: &str) -> Result<Vec<Selector>, FieldError> {
    let mut out: Vec<Selector> = Vec::with_capacity(list.len());
    for (i, sel) in list.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let s = Selector::try_from_label_selector(sel).map_err(|e| e.under(&path))?;
        if let Some(j) = out.iter().position(|o| *o == s) {
            return Err(FieldError::new(
                path,
                format!("the same selector as {field}[{j}]"),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Whether `sel` matches `labels`, validating it first.
///
/// # Errors
/// As [`Selector::try_from_label_selector`].
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, FieldError> {
    Ok(Selector::try_from_label_selector(sel)?.matches(labels))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters (Kubernetes' qualified name).
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!(
            "label key {key:?}: the prefix must be a lowercase DNS subdomain"
        ));
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "label key {key:?}: the name must be 1-63 characters of letters, digits, '-', '_' \
             and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or what [`is_label_name`] accepts.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be at most 63 characters of letters, digits, '-', '_' \
             and '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.len() <= 63
                && b.first().is_some_and(edge)
                && b.last().is_some_and(edge)
                && b.iter().all(|c| edge(c) || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::try_from_label_selector(&LabelSelector::default()).unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&BTreeMap::new()));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators() {
        let s = sel(
            &[("tier", "web")],
            vec![
                expr("app", "In", &["a", "b"]),
                expr("env", "NotIn", &["prod"]),
                expr("team", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ],
        );
        let s = Selector::try_from_label_selector(&s).unwrap();
        assert_eq!(
            s.to_string(),
            "app in (a,b),env notin (prod),!legacy,team,tier=web"
        );
        let ok = labels(&[("tier", "web"), ("app", "a"), ("team", "x")]);
        assert!(s.matches(&ok));
        let mut l = ok.clone();
        l.insert("env".into(), "dev".into());
        assert!(s.matches(&l), "NotIn with another value matches");
        l.insert("env".into(), "prod".into());
        assert!(!s.matches(&l));
        let mut l = ok.clone();
        l.insert("legacy".into(), String::new());
        assert!(
            !s.matches(&l),
            "DoesNotExist fails on an empty-valued label"
        );
        let mut l = ok.clone();
        l.remove("team");
        assert!(!s.matches(&l));
        let mut l = ok;
        l.insert("app".into(), "c".into());
        assert!(!s.matches(&l));
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let cases = [
            (
                sel(&[], vec![expr("a", "Equals", &["x"])]),
                "matchExpressions[0].operator",
            ),
            (
                sel(&[], vec![expr("a", "In", &[])]),
                "matchExpressions[0].values",
            ),
            (
                sel(&[], vec![expr("a", "Exists", &["x"])]),
                "matchExpressions[0].values",
            ),
            (
                sel(&[], vec![expr("-a", "Exists", &[])]),
                "matchExpressions[0].key",
            ),
            (
                sel(&[], vec![expr("a", "In", &["x", "x"])]),
                "matchExpressions[0].values[1]",
            ),
            (sel(&[("a", "bad value")], vec![]), "matchLabels.a"),
            (sel(&[("Foo.com/a", "x")], vec![]), "matchLabels.Foo.com/a"),
        ];
        for (s, field) in cases {
            let e = Selector::try_from_label_selector(&s).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert!(
            Selector::try_from_label_selector(&sel(&[("kubernetes.io/hostname", "n-1")], vec![]))
                .is_ok()
        );
    }

    #[test]
    fn duplicate_selectors_in_a_list_are_refused() {
        let a = sel(&[("a", "x")], vec![]);
        let e = parse_selectors(&[a.clone(), a], "spec.nodeSelectors").unwrap_err();
        assert_eq!(e.field, "spec.nodeSelectors[1]");
        let e = parse_selectors(
            &[sel(&[], vec![expr("a", "Nope", &[])])],
            "spec.nodeSelectors",
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            "spec.nodeSelectors[0].matchExpressions[0].operator"
        );
    }
}
