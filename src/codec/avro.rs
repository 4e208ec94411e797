//! Avro records in the Confluent wire format: magic byte 0, a 4-byte big-endian schema
//! id, then the Avro binary datum.
//!
//! Spans written with spanline's own schema (`schemas/span.avsc`) take a fast path that
//! reads the bytes directly; spans written with any other schema the registry knows (an
//! older or newer version, a producer's variant) are resolved against it by `apache-avro`.

use std::borrow::Borrow;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use rustc_hash::FxHashMap;

use super::avro_bin::{self, AvroReadError, Reader};
use super::DecodeError;
use crate::model::Analysis;
use crate::model::{
    hex_trace_id, Attributes, Events, Interner, Resource, Span, SpanKind, StatusCode, Trace,
};

/// `schemas/span.avsc`.
pub const SPAN_SCHEMA: &str = include_str!("../../schemas/span.avsc");
/// `schemas/trace.avsc`.
pub const TRACE_SCHEMA: &str = include_str!("../../schemas/trace.avsc");
/// `schemas/trace-key.avsc`.
pub const TRACE_KEY_SCHEMA: &str = include_str!("../../schemas/trace-key.avsc");
/// `schemas/aggregate.avsc`.
pub const AGGREGATE_SCHEMA: &str = include_str!("../../schemas/aggregate.avsc");
/// `schemas/aggregate-key.avsc`.
pub const AGGREGATE_KEY_SCHEMA: &str = include_str!("../../schemas/aggregate-key.avsc");
/// `schemas/alert.avsc`.
pub const ALERT_SCHEMA: &str = include_str!("../../schemas/alert.avsc");
/// `schemas/alert-key.avsc`.
pub const ALERT_KEY_SCHEMA: &str = include_str!("../../schemas/alert-key.avsc");
/// `schemas/span-key.avsc`.
pub const SPAN_KEY_SCHEMA: &str = include_str!("../../schemas/span-key.avsc");

/// Confluent wire-format magic byte.
pub const MAGIC: u8 = 0;

/// Splits a Confluent-framed record into schema id and datum.
pub fn unframe(record: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match record {
        [MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [] => Err(DecodeError::Empty),
        [m, ..] if *m != MAGIC => Err(DecodeError::BadMagic(*m)),
        _ => Err(DecodeError::Avro(AvroReadError::Truncated)),
    }
}

/// Starts a Confluent-framed record for `schema_id` in `buf`.
pub fn put_frame(buf: &mut Vec<u8>, schema_id: u32) {
    buf.push(MAGIC);
    buf.extend_from_slice(&schema_id.to_be_bytes());
}

/// Reads one datum written with `writer`, resolved to `reader` when given.
pub fn read_value(
    writer: &Schema,
    reader: Option<&Schema>,
    mut datum: &[u8],
) -> apache_avro::AvroResult<Value> {
    apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .maybe_reader_schema(reader)
        .build()?
        .read_value(&mut datum)
}

/// Writes one datum of `schema`.
pub fn write_value(schema: &Schema, value: Value) -> apache_avro::AvroResult<Vec<u8>> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)
}

/// Parses spanline's span schema.
pub fn span_schema() -> Schema {
    Schema::parse_str(SPAN_SCHEMA).expect("schemas/span.avsc is valid")
}

/// How records written with one schema id are read.
#[derive(Debug, Clone)]
enum WriterPlan {
    /// Same canonical form as `schemas/span.avsc`: read bytes directly.
    Native,
    /// Any other schema: resolve with apache-avro.
    Resolve(Arc<Schema>),
}

/// Decodes Avro span records; holds the writer schemas it was given, by id.
pub struct AvroSpanDecoder {
    reader_schema: Schema,
    native_form: String,
    writers: FxHashMap<u32, WriterPlan>,
    interner: Interner,
    resources: ResourceCache,
}

impl Default for AvroSpanDecoder {
    fn default() -> Self {
        let reader_schema = span_schema();
        let native_form = reader_schema.canonical_form();
        Self {
            reader_schema,
            native_form,
            writers: FxHashMap::default(),
            interner: Interner::default(),
            resources: ResourceCache::default(),
        }
    }
}

impl AvroSpanDecoder {
    /// True when the writer schema with this id is known.
    pub fn knows(&self, schema_id: u32) -> bool {
        self.writers.contains_key(&schema_id)
    }

    /// Adds the writer schema registered under `schema_id`.
    pub fn add_schema(&mut self, schema_id: u32, schema: &str) -> Result<(), DecodeError> {
        let schema = Schema::parse_str(schema)
            .map_err(|e| DecodeError::Schema(format!("schema id {schema_id}: {e}")))?;
        let plan = if schema.canonical_form() == self.native_form {
            WriterPlan::Native
        } else {
            WriterPlan::Resolve(Arc::new(schema))
        };
        self.writers.insert(schema_id, plan);
        Ok(())
    }

    /// Decodes one framed record into one span. Fails with
    /// [`DecodeError::UnknownSchemaId`] when the writer schema must be fetched first.
    pub fn decode(&mut self, record: &[u8]) -> Result<Span, DecodeError> {
        let (id, datum) = unframe(record)?;
        match self.writers.get(&id) {
            None => Err(DecodeError::UnknownSchemaId(id)),
            Some(WriterPlan::Native) => {
                let mut r = Reader::new(datum);
                let span = read_span(&mut r, &mut self.interner, &mut self.resources)?;
                if r.remaining() != 0 {
                    return Err(DecodeError::Invalid(format!(
                        "{} bytes left after the span record",
                        r.remaining()
                    )));
                }
                Ok(span)
            }
            Some(WriterPlan::Resolve(writer)) => {
                let writer = writer.clone();
                let schema_err =
                    |e: apache_avro::Error| DecodeError::Schema(format!("schema id {id}: {e}"));
                let value =
                    read_value(&writer, Some(&self.reader_schema), datum).map_err(schema_err)?;
                // Re-encode with the reader schema and take the fast path: one
                // conversion to maintain instead of two.
                let bytes = write_value(&self.reader_schema, value).map_err(schema_err)?;
                read_span(
                    &mut Reader::new(&bytes),
                    &mut self.interner,
                    &mut self.resources,
                )
            }
        }
    }
}

/// Shares one `Arc<Resource>` among spans with the same service and resource attributes.
#[derive(Default)]
pub struct ResourceCache {
    map: FxHashMap<ResourceKey, Arc<Resource>>,
    scratch: Vec<u8>,
}

#[derive(PartialEq, Eq, Hash)]
struct ResourceKey(Box<[u8]>);

impl Borrow<[u8]> for ResourceKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl ResourceCache {
    const CAPACITY: usize = 16_384;

    /// The shared resource for this service name and encoded resource attributes.
    pub fn get(&mut self, interner: &mut Interner, service: &str, attrs: &[u8]) -> Arc<Resource> {
        self.scratch.clear();
        avro_bin::put_str(&mut self.scratch, service);
        self.scratch.extend_from_slice(attrs);
        if let Some(r) = self.map.get(self.scratch.as_slice()) {
            return r.clone();
        }
        if self.map.len() >= Self::CAPACITY {
            self.map.clear();
        }
        let attributes = Attributes::read(&mut Reader::new(attrs)).unwrap_or_default();
        let resource = Arc::new(Resource {
            service_name: interner.intern(service),
            attributes,
        });
        self.map.insert(
            ResourceKey(self.scratch.as_slice().into()),
            resource.clone(),
        );
        resource
    }

    /// The shared resource for an already built one.
    pub fn share(
        &mut self,
        interner: &mut Interner,
        service: &str,
        attrs: &Attributes,
    ) -> Arc<Resource> {
        self.get(interner, service, attrs.as_bytes())
    }
}

fn read_id<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], AvroReadError> {
    Ok(r.fixed(N)?.try_into().expect("fixed size"))
}

/// Reads one span datum written with `schemas/span.avsc`.
pub fn read_span(
    r: &mut Reader<'_>,
    interner: &mut Interner,
    resources: &mut ResourceCache,
) -> Result<Span, DecodeError> {
    let trace_id = u128::from_be_bytes(read_id::<16>(r)?);
    let span_id = u64::from_be_bytes(read_id::<8>(r)?);
    let parent_span_id = match r.long()? {
        0 => 0,
        1 => u64::from_be_bytes(read_id::<8>(r)?),
        n => return Err(AvroReadError::BadUnion(n, "Span.parent_span_id").into()),
    };
    let name = interner.intern(r.str()?);
    let kind_index = r.long()?;
    let kind =
        SpanKind::from_index(kind_index).ok_or(AvroReadError::BadEnum(kind_index, "SpanKind"))?;
    let start_ns = r.long()?;
    let end_ns = r.long()?;
    let status_index = r.long()?;
    let status = StatusCode::from_index(status_index)
        .ok_or(AvroReadError::BadEnum(status_index, "StatusCode"))?;
    let status_message = match r.long()? {
        0 => None,
        1 => Some(r.str()?.into()),
        n => return Err(AvroReadError::BadUnion(n, "Span.status_message").into()),
    };
    let service = r.str()?;
    let attributes = Attributes::read(r)?;
    let res_start = r.position();
    Attributes::read(r)?;
    let res_bytes = r.slice(res_start, r.position());
    let resource = resources.get(interner, service, res_bytes);
    let events = Events::read(r)?;
    let span = Span {
        trace_id,
        span_id,
        parent_span_id,
        start_ns,
        end_ns,
        name,
        kind,
        status,
        status_message,
        resource,
        attributes,
        events,
    };
    super::validate_span(&span)?;
    Ok(span)
}

/// Appends the span datum (`schemas/span.avsc`).
pub fn write_span(buf: &mut Vec<u8>, span: &Span) {
    buf.extend_from_slice(&span.trace_id.to_be_bytes());
    buf.extend_from_slice(&span.span_id.to_be_bytes());
    if span.is_root() {
        avro_bin::put_long(buf, 0);
    } else {
        avro_bin::put_long(buf, 1);
        buf.extend_from_slice(&span.parent_span_id.to_be_bytes());
    }
    avro_bin::put_str(buf, &span.name);
    avro_bin::put_long(buf, span.kind as i64);
    avro_bin::put_long(buf, span.start_ns);
    avro_bin::put_long(buf, span.end_ns);
    avro_bin::put_long(buf, span.status as i64);
    match &span.status_message {
        None => avro_bin::put_long(buf, 0),
        Some(m) => {
            avro_bin::put_long(buf, 1);
            avro_bin::put_str(buf, m);
        }
    }
    avro_bin::put_str(buf, &span.resource.service_name);
    buf.extend_from_slice(span.attributes.as_bytes());
    buf.extend_from_slice(span.resource.attributes.as_bytes());
    buf.extend_from_slice(span.events.as_bytes());
}

/// Appends the trace datum (`schemas/trace.avsc`); the analysis fields keep their
/// defaults when there is no analysis.
pub fn write_trace(buf: &mut Vec<u8>, trace: &Trace, analysis: Option<&Analysis>) {
    buf.extend_from_slice(&trace.trace_id.to_be_bytes());
    avro_bin::put_bool(buf, trace.amendment);
    let reason = crate::model::CloseReason::ALL
        .iter()
        .position(|r| *r == trace.close_reason)
        .expect("every reason is listed");
    avro_bin::put_long(buf, reason as i64);
    avro_bin::put_bool(buf, trace.incomplete);
    avro_bin::put_long(buf, trace.spans.len() as i64);
    avro_bin::put_long(buf, trace.start_ns());
    avro_bin::put_long(buf, trace.end_ns());
    avro_bin::put_long(buf, trace.duration_ns());
    avro_bin::put_long(buf, trace.error_count() as i64);
    match trace.root() {
        None => {
            avro_bin::put_long(buf, 0);
            avro_bin::put_long(buf, 0);
        }
        Some(root) => {
            avro_bin::put_long(buf, 1);
            avro_bin::put_str(buf, root.service());
            avro_bin::put_long(buf, 1);
            avro_bin::put_str(buf, &root.name);
        }
    }
    let services = trace.services();
    if !services.is_empty() {
        avro_bin::put_long(buf, services.len() as i64);
        for s in services {
            avro_bin::put_str(buf, s);
        }
    }
    avro_bin::put_long(buf, 0);
    write_analysis(buf, analysis);
    if !trace.spans.is_empty() {
        avro_bin::put_long(buf, trace.spans.len() as i64);
        for span in &trace.spans {
            write_span(buf, span);
        }
    }
    avro_bin::put_long(buf, 0);
}

fn put_array<T>(buf: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        avro_bin::put_long(buf, items.len() as i64);
        for i in items {
            item(buf, i);
        }
    }
    avro_bin::put_long(buf, 0);
}

fn write_analysis(buf: &mut Vec<u8>, analysis: Option<&Analysis>) {
    let Some(a) = analysis else {
        // depth 0, no path, no bottleneck, no service, share 0, no findings, no oddities
        buf.extend_from_slice(&[0, 0, 0, 0]);
        avro_bin::put_double(buf, 0.0);
        buf.extend_from_slice(&[0, 0]);
        return;
    };
    avro_bin::put_long(buf, a.depth as i64);
    put_array(buf, &a.critical_path, |buf, seg| {
        buf.extend_from_slice(&seg.span_id.to_be_bytes());
        avro_bin::put_str(buf, &seg.service);
        avro_bin::put_str(buf, &seg.name);
        avro_bin::put_long(buf, seg.self_time_ns);
    });
    match &a.bottleneck {
        None => avro_bin::put_long(buf, 0),
        Some(b) => {
            avro_bin::put_long(buf, 1);
            buf.extend_from_slice(&b.span_id.to_be_bytes());
            avro_bin::put_str(buf, &b.service);
            avro_bin::put_str(buf, &b.name);
            avro_bin::put_long(buf, b.self_time_ns);
            avro_bin::put_double(buf, b.share);
        }
    }
    match &a.bottleneck_service {
        None => {
            avro_bin::put_long(buf, 0);
            avro_bin::put_double(buf, 0.0);
        }
        Some((service, share)) => {
            avro_bin::put_long(buf, 1);
            avro_bin::put_str(buf, service);
            avro_bin::put_double(buf, *share);
        }
    }
    put_array(buf, &a.findings, |buf, f| {
        avro_bin::put_str(buf, f.kind.as_str());
        avro_bin::put_str(buf, &f.service);
        put_array(buf, &f.span_ids, |buf, id| {
            buf.extend_from_slice(&id.to_be_bytes())
        });
        avro_bin::put_str(buf, &f.message);
    });
    let odd: Vec<(&str, u32)> = a.oddities.labels().filter(|(_, n)| *n > 0).collect();
    put_array(buf, &odd, |buf, (k, n)| {
        avro_bin::put_str(buf, k);
        avro_bin::put_long(buf, i64::from(*n));
    });
}

/// Appends a key datum (`schemas/trace-key.avsc`, `schemas/span-key.avsc`: one string).
pub fn write_key(buf: &mut Vec<u8>, trace_id: u128) {
    avro_bin::put_str(buf, &hex_trace_id(trace_id));
}
