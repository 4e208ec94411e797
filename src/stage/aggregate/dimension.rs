//! Dimensions of a monitoring scope, and reading their values from a span.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use thiserror::Error;

use crate::model::{AttrValue, Span};

/// One dimension of a series key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The span's service (`service.name`).
    Service,
    /// The span name.
    Operation,
    /// The span kind (`SERVER`, `CLIENT`, …).
    SpanKind,
    /// The status code (`UNSET`, `OK`, `ERROR`).
    StatusCode,
    /// The span attribute `agent.id`, else `gen_ai.agent.name`, else `""` (the first
    /// non-empty of the two).
    Agent,
    /// A span attribute (`""` when absent; numbers and booleans as text).
    Attribute(String),
    /// A resource attribute (`""` when absent); `service.name` is the service.
    Resource(String),
}

const AGENT_KEYS: [&str; 2] = ["agent.id", "gen_ai.agent.name"];

/// A dimension name that is none of the valid forms.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown dimension {0:?}: expected service, operation, span_kind, status_code, agent, \
     attr.<key> or resource.<key>"
)]
pub struct DimensionParseError(pub String);

impl FromStr for Dimension {
    type Err = DimensionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let keyed = |prefix: &str| s.strip_prefix(prefix).filter(|k| !k.is_empty());
        Ok(match s {
            "service" => Self::Service,
            "operation" => Self::Operation,
            "span_kind" => Self::SpanKind,
            "status_code" => Self::StatusCode,
            "agent" => Self::Agent,
            _ => {
                if let Some(key) = keyed("attr.") {
                    Self::Attribute(key.to_owned())
                } else if let Some(key) = keyed("resource.") {
                    Self::Resource(key.to_owned())
                } else {
                    return Err(DimensionParseError(s.to_owned()));
                }
            }
        })
    }
}

/// The form [`FromStr`] reads, also the dimension's name in aggregate keys.
impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service => f.write_str("service"),
            Self::Operation => f.write_str("operation"),
            Self::SpanKind => f.write_str("span_kind"),
            Self::StatusCode => f.write_str("status_code"),
            Self::Agent => f.write_str("agent"),
            Self::Attribute(k) => write!(f, "attr.{k}"),
            Self::Resource(k) => write!(f, "resource.{k}"),
        }
    }
}

impl Serialize for Dimension {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dimension {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a value's text is: borrowed from the span (or static), or a range of the
/// aggregator's scratch buffer (numbers and booleans formatted as text).
#[derive(Debug, Clone, Copy)]
pub(super) enum Text<'a> {
    Borrowed(&'a str),
    Scratch(u32, u32),
}

impl<'a> Text<'a> {
    pub(super) fn get<'s>(self, scratch: &'s str) -> &'s str
    where
        'a: 's,
    {
        match self {
            Text::Borrowed(s) => s,
            Text::Scratch(from, to) => &scratch[from as usize..to as usize],
        }
    }
}

/// How to read the distinct dimensions of all scopes from a span in one pass over its
/// attributes.
#[derive(Debug)]
pub(super) struct Reader {
    dims: Vec<Dimension>,
    /// Span attribute keys to look up (with the two agent keys when `Agent` is used).
    span_keys: Vec<String>,
    /// For each dimension, its index in `span_keys` (attributes and agent).
    slot: Vec<usize>,
    uses_resource: bool,
}

/// Values found per attribute key in a span (inline for a few keys).
type Found<'a> = SmallVec<[Option<AttrValue<'a>>; 4]>;

impl Reader {
    /// A reader of `dims` (distinct).
    pub(super) fn new(dims: Vec<Dimension>) -> Self {
        let mut span_keys: Vec<String> = Vec::new();
        let mut key_slot = |key: &str| match span_keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                span_keys.push(key.to_owned());
                span_keys.len() - 1
            }
        };
        let slot = dims
            .iter()
            .map(|d| match d {
                Dimension::Agent => {
                    let first = key_slot(AGENT_KEYS[0]);
                    key_slot(AGENT_KEYS[1]);
                    first
                }
                Dimension::Attribute(k) => key_slot(k),
                _ => usize::MAX,
            })
            .collect();
        let uses_resource = dims.iter().any(|d| matches!(d, Dimension::Resource(_)));
        Self {
            dims,
            span_keys,
            slot,
            uses_resource,
        }
    }

    /// Appends the text of every dimension of `span` to `out`, formatting non-string
    /// attribute values into `scratch` (which the caller clears per span).
    pub(super) fn read<'a>(
        &self,
        span: &'a Span,
        scratch: &mut String,
        out: &mut SmallVec<[Text<'a>; 8]>,
    ) {
        let mut found: Found<'a> = SmallVec::from_elem(None, self.span_keys.len());
        if !self.span_keys.is_empty() {
            let mut missing = self.span_keys.len();
            for (k, v) in span.attributes.iter() {
                if let Some(i) = self.span_keys.iter().position(|want| want == k) {
                    // the first occurrence of a key wins, as in `Attributes::get`
                    if found[i].is_none() {
                        found[i] = Some(v);
                        missing -= 1;
                        if missing == 0 {
                            break;
                        }
                    }
                }
            }
        }
        for (d, &slot) in self.dims.iter().zip(&self.slot) {
            let text = match d {
                Dimension::Service => Text::Borrowed(&span.resource.service_name),
                Dimension::Operation => Text::Borrowed(&span.name),
                Dimension::SpanKind => Text::Borrowed(span.kind.as_str()),
                Dimension::StatusCode => Text::Borrowed(span.status.as_str()),
                Dimension::Agent => {
                    let id = found[slot].map(|v| text_of(v, scratch));
                    let name = found[slot + 1].map(|v| text_of(v, scratch));
                    [id, name]
                        .into_iter()
                        .flatten()
                        .find(|t| !t.get(scratch).is_empty())
                        .unwrap_or(Text::Borrowed(""))
                }
                Dimension::Attribute(_) => {
                    found[slot].map_or(Text::Borrowed(""), |v| text_of(v, scratch))
                }
                Dimension::Resource(key) => {
                    debug_assert!(self.uses_resource);
                    if key == "service.name" {
                        Text::Borrowed(&span.resource.service_name)
                    } else {
                        span.resource
                            .attributes
                            .get(key)
                            .map_or(Text::Borrowed(""), |v| text_of(v, scratch))
                    }
                }
            };
            out.push(text);
        }
    }
}

fn text_of<'a>(v: AttrValue<'a>, scratch: &mut String) -> Text<'a> {
    let from = scratch.len() as u32;
    match v {
        AttrValue::Str(s) => return Text::Borrowed(s),
        AttrValue::Bool(b) => return Text::Borrowed(if b { "true" } else { "false" }),
        AttrValue::Int(i) => {
            let _ = write!(scratch, "{i}");
        }
        AttrValue::Double(d) => {
            let _ = write!(scratch, "{d}");
        }
    }
    Text::Scratch(from, scratch.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttributesBuilder;
    use crate::testkit;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for s in [
            "service",
            "operation",
            "span_kind",
            "status_code",
            "agent",
            "attr.http.route",
            "resource.host.name",
        ] {
            let d: Dimension = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(
            "attr.db.system".parse::<Dimension>(),
            Ok(Dimension::Attribute("db.system".into()))
        );
    }

    #[test]
    fn errors_name_the_value_and_the_valid_forms() {
        for bad in ["services", "attr.", "resource.", "", "Service"] {
            let err = bad.parse::<Dimension>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(
                err.contains("attr.<key>") && err.contains("status_code"),
                "{err}"
            );
        }
    }

    #[test]
    fn deserializes_from_strings() {
        let dims: Vec<Dimension> =
            serde_json::from_str(r#"["service", "resource.module"]"#).unwrap();
        assert_eq!(
            dims,
            vec![Dimension::Service, Dimension::Resource("module".into())]
        );
        let err = serde_json::from_str::<Vec<Dimension>>(r#"["nope"]"#).unwrap_err();
        assert!(err.to_string().contains("unknown dimension \"nope\""));
    }

    fn read(dims: &[&str], span: &Span) -> Vec<String> {
        let reader = Reader::new(dims.iter().map(|d| d.parse().unwrap()).collect());
        let mut scratch = String::new();
        let mut out = SmallVec::new();
        reader.read(span, &mut scratch, &mut out);
        out.iter().map(|t| t.get(&scratch).to_owned()).collect()
    }

    #[test]
    fn reads_values_from_the_span() {
        let mut span = testkit::span(1, 2, 0, 0, 10, "checkout");
        let mut attrs = AttributesBuilder::default();
        attrs
            .push("gen_ai.agent.name", AttrValue::Str("planner"))
            .push("retries", AttrValue::Int(3))
            .push("ratio", AttrValue::Double(0.5))
            .push("cached", AttrValue::Bool(true))
            .push("retries", AttrValue::Int(9));
        span.attributes = attrs.build();
        let values = read(
            &[
                "service",
                "operation",
                "span_kind",
                "status_code",
                "agent",
                "attr.retries",
                "attr.ratio",
                "attr.cached",
                "attr.missing",
                "resource.deployment.environment",
                "resource.service.name",
                "resource.missing",
            ],
            &span,
        );
        assert_eq!(
            values,
            [
                "checkout",
                "checkout op",
                "SERVER",
                "UNSET",
                "planner",
                "3",
                "0.5",
                "true",
                "",
                "test",
                "checkout",
                ""
            ]
        );
    }

    #[test]
    fn agent_prefers_agent_id_then_name_then_empty() {
        let mut span = testkit::span(1, 2, 0, 0, 10, "orchestrator");
        let mut attrs = AttributesBuilder::default();
        attrs
            .push("gen_ai.agent.name", AttrValue::Str("planner"))
            .push("agent.id", AttrValue::Str("agent-7"));
        span.attributes = attrs.build();
        assert_eq!(read(&["agent"], &span), ["agent-7"]);
        let mut attrs = AttributesBuilder::default();
        attrs
            .push("agent.id", AttrValue::Str(""))
            .push("gen_ai.agent.name", AttrValue::Str("planner"));
        span.attributes = attrs.build();
        assert_eq!(read(&["agent", "attr.agent.id"], &span), ["planner", ""]);
        span.attributes = AttributesBuilder::default().build();
        assert_eq!(read(&["agent"], &span), [""]);
    }
}
