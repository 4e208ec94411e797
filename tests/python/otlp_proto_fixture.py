"""Writes an OTLP protobuf ExportTraceServiceRequest built with the OpenTelemetry Python
protobuf classes, and a JSON description of the spans it holds.

usage: otlp_proto_fixture.py OUT_FILE

OUT_FILE gets the serialized request; OUT_FILE.expected.json gets a list of spans:
hex ids (parent_span_id null for a root span), name, kind and status code as their OTLP
numbers, service, start/end unix nanos, status message, resource attributes, attributes
and events. Each attribute value is {"type": ..., "value": ...} with type string, bool,
int, double or json; json is the OTLP/JSON form of a value the decoder keeps as JSON text
(arrays).
"""

import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

BASE_NS = 1_760_000_000_000_000_000
TRACE_A = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
TRACE_B = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def any_value(v):
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    raise TypeError(f"no AnyValue for {v!r}")


def key_values(attrs):
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def expected_value(v):
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, int):
        return {"type": "int", "value": v}
    if isinstance(v, float):
        return {"type": "double", "value": v}
    if isinstance(v, str):
        return {"type": "string", "value": v}
    return {"type": "json", "value": json_format.MessageToDict(any_value(v))}


def expected_attrs(attrs):
    return {k: expected_value(v) for k, v in attrs.items()}


# service -> resource attributes besides service.name
RESOURCES = {
    "otel-frontend": {"deployment.environment": "fixture", "service.version": "1.4.2", "host.cpu.count": 8},
    "otel-backend": {"deployment.environment": "fixture", "k8s.pod.ready": True},
}

# (service, scope, trace, span id, parent id, name, kind, start offset ms, duration ms,
#  status code, status message, attributes, events [(offset ms, name, attributes)])
SPANS = [
    ("otel-frontend", "fixture.http", TRACE_A, "b7ad6b7169203331", None, "GET /checkout",
     Span.SPAN_KIND_SERVER, 0, 120, Status.STATUS_CODE_OK, "",
     {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/checkout",
      "user.premium": True, "sampling.ratio": 0.25,
      "http.request.header.accept": ["text/html", "application/json"]},
     [(5, "request.received", {"net.peer.port": 51234})]),
    ("otel-frontend", "fixture.http", TRACE_A, "00f067aa0ba902b7", "b7ad6b7169203331", "POST backend/price",
     Span.SPAN_KIND_CLIENT, 10, 80, Status.STATUS_CODE_UNSET, "",
     {"server.address": "otel-backend", "retry.count": 0, "cache.hit": False},
     []),
    ("otel-frontend", "fixture.render", TRACE_A, "2f3c4d5e6f708192", "b7ad6b7169203331", "render checkout",
     Span.SPAN_KIND_INTERNAL, 95, 20, Status.STATUS_CODE_UNSET, "",
     {"template": "checkout.html", "render.bytes": 48213, "render.ms": 19.75,
      "render.flags": [True, False], "render.sizes": [1, 2, 3], "render.weights": [0.5, 1.5]},
     []),
    ("otel-frontend", "fixture.http", TRACE_B, "1111111111111111", None, "GET /health",
     Span.SPAN_KIND_SERVER, 500, 3, Status.STATUS_CODE_UNSET, "",
     {"http.request.method": "GET", "http.response.status_code": 204},
     []),
    ("otel-backend", "fixture.rpc", TRACE_A, "53995c3f42cd8ad8", "00f067aa0ba902b7", "price.compute",
     Span.SPAN_KIND_SERVER, 15, 70, Status.STATUS_CODE_ERROR, "price service timed out",
     {"rpc.system": "http", "price.items": 3, "price.total": 129.99, "price.currency": "EUR",
      "price.discounted": True, "big.int": -9_007_199_254_740_993},
     [(60, "exception", {"exception.type": "TimeoutError", "exception.escaped": False,
                         "exception.retry_after_s": 1.5})]),
    ("otel-backend", "fixture.db", TRACE_A, "a1b2c3d4e5f60718", "53995c3f42cd8ad8", "SELECT prices",
     Span.SPAN_KIND_CLIENT, 20, 40, Status.STATUS_CODE_UNSET, "",
     {"db.system": "postgresql", "db.statement": "SELECT * FROM prices WHERE sku = $1",
      "db.rows": 3},
     [(21, "db.connect", {}), (58, "db.rows.fetched", {"count": 3})]),
    ("otel-backend", "fixture.queue", TRACE_B, "2222222222222222", "1111111111111111", "publish health",
     Span.SPAN_KIND_PRODUCER, 501, 1, Status.STATUS_CODE_OK, "",
     {"messaging.system": "kafka", "messaging.destination.name": "health"},
     []),
    ("otel-backend", "fixture.queue", TRACE_B, "3333333333333333", "2222222222222222", "consume health",
     Span.SPAN_KIND_CONSUMER, 502, 2, Status.STATUS_CODE_UNSET, "",
     {"messaging.system": "kafka", "messaging.batch.size": 1},
     []),
]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    req = ExportTraceServiceRequest()
    expected = []
    for service, resource_attrs in RESOURCES.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=any_value(service)))
        rs.resource.attributes.extend(key_values(resource_attrs))
        scopes = {}
        for (svc, scope, trace, span_id, parent, name, kind, start_ms, dur_ms, code, message,
             attrs, events) in SPANS:
            if svc != service:
                continue
            if scope not in scopes:
                ss = rs.scope_spans.add()
                ss.scope.name = scope
                ss.scope.version = "0.1.0"
                scopes[scope] = ss
            start = BASE_NS + start_ms * 1_000_000
            end = start + dur_ms * 1_000_000
            span = scopes[scope].spans.add(
                trace_id=trace,
                span_id=bytes.fromhex(span_id),
                parent_span_id=bytes.fromhex(parent) if parent else b"",
                name=name,
                kind=kind,
                start_time_unix_nano=start,
                end_time_unix_nano=end,
                attributes=key_values(attrs),
                status=Status(code=code, message=message),
            )
            for offset_ms, event_name, event_attrs in events:
                span.events.add(
                    time_unix_nano=BASE_NS + offset_ms * 1_000_000,
                    name=event_name,
                    attributes=key_values(event_attrs),
                )
            expected.append({
                "trace_id": trace.hex(),
                "span_id": span_id,
                "parent_span_id": parent,
                "name": name,
                "kind": kind,
                "service": service,
                "start_time_unix_nano": start,
                "end_time_unix_nano": end,
                "status_code": code,
                "status_message": message or None,
                "resource_attributes": expected_attrs(resource_attrs),
                "attributes": expected_attrs(attrs),
                "events": [
                    {"time_unix_nano": BASE_NS + t * 1_000_000, "name": n, "attributes": expected_attrs(a)}
                    for t, n, a in events
                ],
            })
    with open(out, "wb") as f:
        f.write(req.SerializeToString())
    with open(out + ".expected.json", "w") as f:
        json.dump(expected, f, indent=2)
    print(f"wrote {len(expected)} spans in {len(req.resource_spans)} resource spans to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
