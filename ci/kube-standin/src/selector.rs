//! Label and field selectors with the apiserver's syntax and matching rules.
//!
//! Labels (`k8s.io/apimachinery/pkg/labels`): comma-separated requirements `k=v`, `k==v`,
//! `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>5`, `k<5`. `!=` and `notin` also match
//! objects without the label. Fields (`k8s.io/apimachinery/pkg/fields`): `f=v`, `f==v`, `f!=v`,
//! with `\` escaping `,`, `=`, `!` and `\`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::validation;

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
    In,
    NotIn,
}

impl Token {
    fn show(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Not => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::Comma => ",".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | ',' | '(' | ')')
}

fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('!', Some('=')) => (Token::NotEq, 2),
                ('!', _) => (Token::Not, 1),
                ('=', Some('=')) => (Token::DoubleEq, 2),
                ('=', _) => (Token::Eq, 1),
                ('>', _) => (Token::Gt, 1),
                ('<', _) => (Token::Lt, 1),
                (',', _) => (Token::Comma, 1),
                ('(', _) => (Token::Open, 1),
                _ => (Token::Close, 1),
            };
            out.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out
}

fn parse_error(msg: impl AsRef<str>) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {}", msg.as_ref()))
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    ///
    /// # Errors
    ///
    /// 400 `BadRequest` for a selector the apiserver would not parse.
    pub(crate) fn parse(s: &str) -> Result<Self, ApiError> {
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        if toks.is_empty() {
            return Ok(Self { reqs });
        }
        loop {
            let (req, next) = parse_requirement(&toks, i)?;
            reqs.push(req);
            i = next;
            match toks.get(i) {
                None => break,
                Some(Token::Comma) => {
                    i += 1;
                    if i >= toks.len() {
                        return Err(parse_error("found '', expected: identifier after ','"));
                    }
                }
                Some(t) => {
                    return Err(parse_error(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        t.show()
                    )));
                }
            }
        }
        // The apiserver sorts requirements by key; matching does not depend on the order.
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { reqs })
    }

    /// Whether the selector is empty (matches everything).
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object with these `metadata.labels` (or none) matches.
    pub(crate) fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match r.op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Equals | Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotEquals | Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::GreaterThan | Op::LessThan => {
                    let Some(have) = v.and_then(|v| v.parse::<i64>().ok()) else {
                        return false;
                    };
                    let Some(want) = r.values.iter().next().and_then(|v| v.parse::<i64>().ok())
                    else {
                        return false;
                    };
                    if r.op == Op::GreaterThan {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let errs = validation::qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(parse_error(format!(
            "key: Invalid value: {key:?}: {}",
            errs.join("; ")
        )))
    }
}

fn check_value(v: &str) -> Result<(), ApiError> {
    let errs = validation::label_value(v);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(parse_error(format!(
            "values[0]: Invalid value: {v:?}: {}",
            errs.join("; ")
        )))
    }
}

fn parse_requirement(toks: &[Token], mut i: usize) -> Result<(Requirement, usize), ApiError> {
    let (key, negated) = match toks.get(i) {
        Some(Token::Not) => match toks.get(i + 1) {
            Some(Token::Ident(k)) => {
                i += 2;
                (k.clone(), true)
            }
            other => {
                let shown = other.map(Token::show).unwrap_or_default();
                return Err(parse_error(format!(
                    "found '{shown}', expected: identifier"
                )));
            }
        },
        Some(Token::Ident(k)) => {
            i += 1;
            (k.clone(), false)
        }
        other => {
            let shown = other.map(Token::show).unwrap_or_default();
            return Err(parse_error(format!(
                "found '{shown}', expected: !, identifier, or 'end of string'"
            )));
        }
    };
    check_key(&key)?;
    if negated {
        return Ok((
            Requirement {
                key,
                op: Op::DoesNotExist,
                values: BTreeSet::new(),
            },
            i,
        ));
    }
    let op = match toks.get(i) {
        None | Some(Token::Comma) => {
            return Ok((
                Requirement {
                    key,
                    op: Op::Exists,
                    values: BTreeSet::new(),
                },
                i,
            ));
        }
        Some(Token::Eq | Token::DoubleEq) => Op::Equals,
        Some(Token::NotEq) => Op::NotEquals,
        Some(Token::In) => Op::In,
        Some(Token::NotIn) => Op::NotIn,
        Some(Token::Gt) => Op::GreaterThan,
        Some(Token::Lt) => Op::LessThan,
        Some(t) => {
            return Err(parse_error(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                t.show()
            )));
        }
    };
    i += 1;
    let mut values = BTreeSet::new();
    match op {
        Op::In | Op::NotIn => {
            if toks.get(i) != Some(&Token::Open) {
                let shown = toks.get(i).map(Token::show).unwrap_or_default();
                return Err(parse_error(format!("found '{shown}', expected: '('")));
            }
            i += 1;
            loop {
                match toks.get(i) {
                    Some(Token::Close) => {
                        i += 1;
                        break;
                    }
                    Some(Token::Ident(v)) => {
                        values.insert(v.clone());
                        i += 1;
                        match toks.get(i) {
                            Some(Token::Comma) => {
                                i += 1;
                                if matches!(toks.get(i), Some(Token::Close | Token::Comma)) {
                                    values.insert(String::new());
                                }
                            }
                            Some(Token::Close) => {}
                            other => {
                                let shown = other.map(Token::show).unwrap_or_default();
                                return Err(parse_error(format!(
                                    "found '{shown}', expected: ',' or ')'"
                                )));
                            }
                        }
                    }
                    Some(Token::Comma) => {
                        values.insert(String::new());
                        i += 1;
                    }
                    other => {
                        let shown = other.map(Token::show).unwrap_or_default();
                        return Err(parse_error(format!(
                            "found '{shown}', expected: ',', ')' or identifier"
                        )));
                    }
                }
            }
            if values.is_empty() {
                return Err(parse_error(format!(
                    "values: Invalid value: []string{{}}: for 'in', 'notin' operators, values set can't be empty (key {key:?})"
                )));
            }
        }
        _ => {
            match toks.get(i) {
                None | Some(Token::Comma) => {
                    values.insert(String::new());
                }
                Some(Token::Ident(v)) => {
                    values.insert(v.clone());
                    i += 1;
                }
                Some(t) => {
                    return Err(parse_error(format!(
                        "found '{}', expected: identifier",
                        t.show()
                    )));
                }
            }
            if matches!(op, Op::GreaterThan | Op::LessThan)
                && values.iter().any(|v| v.parse::<i64>().is_err())
            {
                return Err(parse_error(format!(
                    "values[0]: Invalid value: {:?}: for 'Gt', 'Lt' operators, the value must be an integer",
                    values.iter().next().cloned().unwrap_or_default()
                )));
            }
        }
    }
    for v in &values {
        check_value(v)?;
    }
    Ok((Requirement { key, op, values }, i))
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    field: String,
    value: String,
    equal: bool,
}

// === impl FieldSelector ===

impl FieldSelector {
    /// Parses a `fieldSelector` query value; `supported` says which fields the resource
    /// can be selected by.
    ///
    /// # Errors
    ///
    /// 400 `BadRequest` for bad syntax or a field the resource does not support.
    pub(crate) fn parse(s: &str, supported: impl Fn(&str) -> bool) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, value, equal) = split_term(&part).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ))
            })?;
            let field = unescape(&field);
            if !supported(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push(FieldTerm {
                field,
                value: unescape(&value),
                equal,
            });
        }
        Ok(Self { terms })
    }

    /// Whether the selector is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object matches; `value_of` yields a field's value (`""` when unset).
    pub(crate) fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.terms
            .iter()
            .all(|t| (value_of(&t.field) == t.value) == t.equal)
    }
}

/// Splits at unescaped `sep`, keeping escapes in the parts.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    parts.push(cur);
    parts
}

/// Finds the first unescaped `!=`, `==` or `=` in a term.
fn split_term(term: &str) -> Option<(String, String, bool)> {
    let b = term.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'!' if b.get(i + 1) == Some(&b'=') => {
                return Some((term[..i].to_string(), term[i + 2..].to_string(), false));
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                return Some((term[..i].to_string(), term[i + 2..].to_string(), true));
            }
            b'=' => return Some((term[..i].to_string(), term[i + 1..].to_string(), true)),
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn equality_and_sets() {
        let s = LabelSelector::parse("a=b,c!=d,e in (x,y),f notin (z),g,!h").unwrap();
        let ok = labels(json!({"a": "b", "e": "x", "g": ""}));
        assert!(s.matches(Some(&ok)));
        let with_h = labels(json!({"a": "b", "e": "x", "g": "", "h": "1"}));
        assert!(!s.matches(Some(&with_h)));
        let c_is_d = labels(json!({"a": "b", "c": "d", "e": "x", "g": ""}));
        assert!(!s.matches(Some(&c_is_d)));
        let f_is_z = labels(json!({"a": "b", "e": "y", "f": "z", "g": ""}));
        assert!(!s.matches(Some(&f_is_z)));
        let no_g = labels(json!({"a": "b", "e": "y"}));
        assert!(!s.matches(Some(&no_g)));
        assert!(!s.matches(None));
    }

    #[test]
    fn spacing_double_equals_and_numbers() {
        let s = LabelSelector::parse(" a == b , n > 3 ").unwrap();
        assert!(s.matches(Some(&labels(json!({"a": "b", "n": "4"})))));
        assert!(!s.matches(Some(&labels(json!({"a": "b", "n": "3"})))));
        let empty = LabelSelector::parse("a=").unwrap();
        assert!(empty.matches(Some(&labels(json!({"a": ""})))));
        assert!(!empty.matches(Some(&labels(json!({"a": "x"})))));
        assert!(LabelSelector::parse("").unwrap().matches(None));
        assert!(LabelSelector::parse("kubernetes.io/service-name=web").is_ok());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a=b,", "a in x", "a in ()", "a=(b)", "=b", "a b", "a>x", "!", "a=b c", "a/b/c=d",
        ] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn fields() {
        let all = |_: &str| true;
        let s =
            FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system", all).unwrap();
        assert!(s.matches(|f| if f == "metadata.name" {
            "web".into()
        } else {
            "default".into()
        }));
        assert!(!s.matches(|f| if f == "metadata.name" {
            "web".into()
        } else {
            "kube-system".into()
        }));
        let esc = FieldSelector::parse(r"metadata.name==a\,b", all).unwrap();
        assert!(esc.matches(|_| "a,b".into()));
        let e = FieldSelector::parse("spec.x=1", |f| f.starts_with("metadata.")).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.x");
        assert!(FieldSelector::parse("nonsense", all).is_err());
    }
}
