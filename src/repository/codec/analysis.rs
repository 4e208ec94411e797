//! The analysis section of a stored trace's blob, sharing the blob's string table.

use crate::model::{
    Analysis, Bottleneck, Edge, EdgeKind, Finding, FindingKind, Oddities, PathSegment, SpanId,
};

use super::{put_len, put_signed, put_varint, DecodeError, Decoded, Reader, Writer};

fn put_id(buf: &mut Vec<u8>, id: SpanId) {
    buf.extend_from_slice(&id.to_le_bytes());
}

pub(super) fn encode_analysis<'a>(w: &mut Writer<'a>, a: &'a Analysis) {
    put_signed(&mut w.body, a.duration_ns);
    put_len(&mut w.body, a.span_count);
    put_len(&mut w.body, a.depth);
    put_len(&mut w.body, a.error_count);
    put_len(&mut w.body, a.services.len());
    for s in &a.services {
        w.str(s);
    }
    w.opt_str(a.root_service.as_deref());
    w.opt_str(a.root_name.as_deref());
    put_len(&mut w.body, a.critical_path.len());
    for p in &a.critical_path {
        put_id(&mut w.body, p.span_id);
        w.str(&p.service);
        w.str(&p.name);
        put_signed(&mut w.body, p.self_time_ns);
    }
    match &a.bottleneck {
        None => w.body.push(0),
        Some(b) => {
            w.body.push(1);
            put_id(&mut w.body, b.span_id);
            w.str(&b.service);
            w.str(&b.name);
            put_signed(&mut w.body, b.self_time_ns);
            w.body.extend_from_slice(&b.share.to_le_bytes());
        }
    }
    match &a.bottleneck_service {
        None => w.body.push(0),
        Some((s, share)) => {
            w.body.push(1);
            w.str(s);
            w.body.extend_from_slice(&share.to_le_bytes());
        }
    }
    put_len(&mut w.body, a.edges.len());
    for e in &a.edges {
        w.str(&e.client);
        w.str(&e.server);
        w.body.push(e.kind as u8 | (u8::from(e.error) << 4));
        put_signed(&mut w.body, e.client_latency_ns);
        put_signed(&mut w.body, e.server_latency_ns);
        put_signed(&mut w.body, e.end_ns);
        put_id(&mut w.body, e.server_span_id);
    }
    put_len(&mut w.body, a.findings.len());
    for f in &a.findings {
        w.body.push(f.kind as u8);
        put_len(&mut w.body, f.span_ids.len());
        for id in &f.span_ids {
            put_id(&mut w.body, *id);
        }
        w.str(&f.service);
        w.str(&f.message);
    }
    let o = &a.oddities;
    for n in [
        o.clock_skew,
        o.orphans,
        o.cycles,
        o.extra_roots,
        o.negative_durations,
        o.zero_durations,
    ] {
        put_varint(&mut w.body, u64::from(n));
    }
    w.body.push(u8::from(o.synthetic_root));
}

fn edge_kind(b: u8) -> Decoded<EdgeKind> {
    [
        EdgeKind::RequestReply,
        EdgeKind::Messaging,
        EdgeKind::ParentChild,
    ]
    .get(usize::from(b))
    .copied()
    .ok_or(DecodeError("bad edge kind"))
}

pub(super) fn decode_analysis(r: &mut Reader<'_>) -> Decoded<Analysis> {
    let duration_ns = r.signed()?;
    let span_count = r.len()?;
    let depth = r.len()?;
    let error_count = r.len()?;
    let services = (0..r.len()?).map(|_| r.str()).collect::<Decoded<_>>()?;
    let root_service = r.opt_str()?;
    let root_name = r.opt_str()?;
    let critical_path = (0..r.len()?)
        .map(|_| {
            Ok(PathSegment {
                span_id: r.u64()?,
                service: r.str()?,
                name: r.str()?,
                self_time_ns: r.signed()?,
            })
        })
        .collect::<Decoded<_>>()?;
    let bottleneck = match r.u8()? {
        0 => None,
        _ => Some(Bottleneck {
            span_id: r.u64()?,
            service: r.str()?,
            name: r.str()?,
            self_time_ns: r.signed()?,
            share: r.f64()?,
        }),
    };
    let bottleneck_service = match r.u8()? {
        0 => None,
        _ => Some((r.str()?, r.f64()?)),
    };
    let edges = (0..r.len()?)
        .map(|_| {
            let client = r.str()?;
            let server = r.str()?;
            let b = r.u8()?;
            Ok(Edge {
                client,
                server,
                kind: edge_kind(b & 0x0f)?,
                error: b >> 4 != 0,
                client_latency_ns: r.signed()?,
                server_latency_ns: r.signed()?,
                end_ns: r.signed()?,
                server_span_id: r.u64()?,
            })
        })
        .collect::<Decoded<_>>()?;
    let findings = (0..r.len()?)
        .map(|_| {
            let kind = *FindingKind::ALL
                .get(usize::from(r.u8()?))
                .ok_or(DecodeError("bad finding kind"))?;
            let span_ids = (0..r.len()?).map(|_| r.u64()).collect::<Decoded<_>>()?;
            Ok(Finding {
                kind,
                span_ids,
                service: r.str()?,
                message: r.str()?.to_string(),
            })
        })
        .collect::<Decoded<_>>()?;
    let mut counts = [0u32; 6];
    for c in &mut counts {
        *c = u32::try_from(r.varint()?).map_err(|_| DecodeError("count out of range"))?;
    }
    let [clock_skew, orphans, cycles, extra_roots, negative_durations, zero_durations] = counts;
    let oddities = Oddities {
        clock_skew,
        orphans,
        cycles,
        extra_roots,
        negative_durations,
        zero_durations,
        synthetic_root: r.u8()? != 0,
    };
    Ok(Analysis {
        duration_ns,
        span_count,
        depth,
        error_count,
        services,
        root_service,
        root_name,
        critical_path,
        bottleneck,
        bottleneck_service,
        edges,
        findings,
        oddities,
    })
}
