//! Reading pipeline files: interpolation, parsing, and collecting every error.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::{PipelineConfig, StageConfig};
use crate::model::{did_you_mean, ConfigErrors};

/// Replaces `${VAR}` and `${VAR:-default}` with environment values. A `$$` stays a
/// literal `$`. Unset variables without a default are errors, reported by line.
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> String {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(
                        format!("line {}", lineno + 1),
                        "`${` without a closing `}`",
                        "write ${VAR} or ${VAR:-default}",
                    );
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match (
                    valid,
                    env(name).filter(|v| !v.is_empty() || default.is_none()),
                    default,
                ) {
                    (false, _, _) => errors.push(
                        format!("line {}", lineno + 1),
                        format!("`${{{expr}}}` is not a variable reference"),
                        "variable names are letters, digits and _",
                    ),
                    (true, Some(v), _) => out.push_str(&v),
                    (true, None, Some(d)) => out.push_str(d),
                    (true, None, None) => errors.push(
                        format!("line {}", lineno + 1),
                        format!("environment variable `{name}` is not set"),
                        format!("set {name} or write ${{{name}:-default}}"),
                    ),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    out
}

/// Loads and validates a pipeline file; every problem is returned at once.
pub fn load_file(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errors = ConfigErrors::default();
        errors.push(
            "",
            format!("cannot read {}: {e}", path.display()),
            "check the path",
        );
        errors
    })?;
    load_str(&text, |k| std::env::var(k).ok())
}

/// Loads and validates pipeline text with the given environment.
pub fn load_str(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let text = interpolate(text, env, &mut errors);
    let mut root: Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(
                "",
                format!("not valid yaml: {e}"),
                "check indentation and quoting",
            );
            return Err(errors);
        }
    };
    // Each section and list item is checked on its own so one mistake does not hide
    // the next; the typed parse of the whole only runs when they all passed.
    let before = errors.0.len();
    check_sections(&mut root, &mut errors);
    if errors.0.len() > before {
        return Err(errors);
    }
    match serde_yaml::from_value::<PipelineConfig>(root) {
        Ok(config) => {
            config.validate(&mut errors);
            if errors.is_empty() {
                Ok(config)
            } else {
                Err(errors)
            }
        }
        Err(e) => {
            errors.push("", e.to_string(), "");
            Err(errors)
        }
    }
}

const TOP_LEVEL: &[&str] = &[
    "name",
    "kafka",
    "schema_registry",
    "sources",
    "stages",
    "outputs",
    "http",
    "delivery",
    "repository",
];
const REQUIRED: &[&str] = &["name", "kafka", "sources", "stages", "outputs"];

fn check_sections(root: &mut Value, errors: &mut ConfigErrors) {
    let Value::Mapping(map) = root else {
        errors.push(
            "",
            "a pipeline file must be a mapping",
            "start with `name: ...`",
        );
        return;
    };
    for key in map.keys() {
        let k = key.as_str().unwrap_or("?");
        if !TOP_LEVEL.contains(&k) {
            errors.push(k, "unknown key", hint_for(k, TOP_LEVEL));
        }
    }
    for k in REQUIRED {
        if !map.contains_key(*k) {
            errors.push(*k, "is missing", format!("add `{k}:`"));
        }
    }
    let mut section = |key: &str, check: &mut dyn FnMut(&mut Value, &str, &mut ConfigErrors)| {
        if let Some(v) = map.get_mut(key) {
            check(v, key, errors);
        }
    };
    section("name", &mut |v, p, e| check_as::<String>(v, p, e));
    section("kafka", &mut |v, p, e| {
        check_as::<super::KafkaConfig>(v, p, e)
    });
    section("schema_registry", &mut |v, p, e| {
        check_as::<Option<super::SchemaRegistryConfig>>(v, p, e)
    });
    section("outputs", &mut |v, p, e| {
        check_as::<super::OutputsConfig>(v, p, e)
    });
    section("http", &mut |v, p, e| {
        check_as::<super::HttpConfig>(v, p, e)
    });
    section("delivery", &mut |v, p, e| {
        check_as::<super::Delivery>(v, p, e)
    });
    section("repository", &mut |v, p, e| {
        check_as::<super::RepositoryConfig>(v, p, e)
    });
    section("sources", &mut |v, p, e| {
        check_list::<super::SourceConfig>(v, p, e)
    });
    section("stages", &mut |v, p, e| check_stages(v, p, e));
}

fn check_list<T: DeserializeOwned>(v: &mut Value, path: &str, errors: &mut ConfigErrors) {
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                check_as::<T>(item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => errors.push(
            path,
            "must be a list",
            format!("write `{path}:` followed by `- ...` items"),
        ),
    }
}

fn check_stages(v: &mut Value, path: &str, errors: &mut ConfigErrors) {
    let Value::Sequence(items) = v else {
        errors.push(
            path,
            "must be a list",
            "write `stages:` followed by `- type: ...` items",
        );
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        let p = format!("{path}[{i}]");
        let ty = item.get("type").and_then(Value::as_str).map(str::to_owned);
        match ty.as_deref() {
            None => errors.push(
                format!("{p}.type"),
                "is missing",
                format!("one of: {}", StageConfig::TYPES.join(", ")),
            ),
            Some(name) => {
                if !StageConfig::check_body(name, &mut without_type(item), &p, errors) {
                    errors.push(
                        format!("{p}.type"),
                        format!("unknown stage type `{name}`"),
                        hint_for(name, StageConfig::TYPES),
                    );
                }
            }
        }
    }
}

fn without_type(item: &Value) -> Value {
    let mut body = item.clone();
    if let Value::Mapping(m) = &mut body {
        m.remove("type");
    }
    body
}

/// Deserialises `v` as `T`, recording every unknown key and every bad value (each is
/// removed and the parse retried), with paths under `path`.
pub(super) fn check_as<T: DeserializeOwned>(v: &mut Value, path: &str, errors: &mut ConfigErrors) {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..64 {
        let result: Result<T, _> = serde_path_to_error::deserialize(v.clone());
        let Err(err) = result else { return };
        let full = join_path(path, &err.path().to_string());
        let message = err.inner().to_string();
        if let Some((field, expected)) = parse_unknown_field(&message) {
            let known: Vec<&str> = expected.iter().map(String::as_str).collect();
            errors.push(full, "unknown key", hint_for(&field, &known));
        } else if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            let missing = join_path(&full, field);
            // a key removed for a bad value shows up again as missing: said already
            if !removed.contains(&missing) {
                errors.push(missing, "is missing", format!("add `{field}:`"));
            }
            return;
        } else {
            let hint = if message.contains("invalid duration") {
                ""
            } else {
                "check the value's type"
            };
            errors.push(full.clone(), message, hint);
            removed.push(full);
        }
        if !remove_at(v, err.path()) {
            return;
        }
    }
}

fn join_path(base: &str, inner: &str) -> String {
    match (base.is_empty(), inner.is_empty() || inner == ".") {
        (_, true) => base.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{base}{inner}"),
        (false, false) => format!("{base}.{inner}"),
    }
}

/// `unknown field `x`, expected one of `a`, `b`` → ("x", ["a", "b"]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field.to_owned(), expected))
}

/// Removes the key the path ends at; false when the path does not end at a map key.
fn remove_at(v: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key: last }, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        cur = match (seg, cur) {
            (Segment::Seq { index }, Value::Sequence(s)) => match s.get_mut(*index) {
                Some(x) => x,
                None => return false,
            },
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        _ => false,
    }
}

fn hint_for(got: &str, known: &[&str]) -> String {
    did_you_mean(got, known, "known keys")
}
