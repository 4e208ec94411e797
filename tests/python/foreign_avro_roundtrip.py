"""spanline seen from a third-party client: confluent-kafka produces Avro spans through the
schema registry and consumes the traces spanline assembles from them.

usage: foreign_avro_roundtrip.py BOOTSTRAP REGISTRY_URL SCHEMAS_DIR

Produces the spans of 20 traces to `spans` (value schema SCHEMAS_DIR/span.avsc, subject
`spans-value`), then one trace 120 s later in event time so the watermark passes the idle
gap of the others, then reads `traces` from the beginning until all 20 came back and checks
each one. Prints `ok: 20 traces` and exits 0, or prints what differs and exits 1.
"""

import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

TRACE_COUNT = 20
SPANS_TOPIC = "spans"
TRACES_TOPIC = "traces"
AGGREGATES_TOPIC = "aggregates"
CONSUME_DEADLINE_S = 90
# Event-time distance of the last trace: far past idle_gap (5s) + out_of_orderness (2s).
PUSH_AHEAD_NS = 120 * 1_000_000_000
MS = 1_000_000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def attrs(values):
    """An Avro attribute array; the value's Python type picks the union branch."""
    return [{"key": k, "value": v} for k, v in values.items()]


def make_trace(base_ns, index):
    """The four spans of one trace: py-gateway root, then py-orders and py-db."""
    trace_id = os.urandom(16)
    root_id, orders_id, validate_id, db_id = (os.urandom(8) for _ in range(4))
    resource = {
        "py-gateway": attrs({"deployment.environment": "ci", "service.version": "3.2.1", "host.cpu.count": 4}),
        "py-orders": attrs({"deployment.environment": "ci", "service.version": "1.0.7", "k8s.pod.ready": True}),
        "py-db": attrs({"deployment.environment": "ci", "db.pool.ratio": 0.5}),
    }

    def span(span_id, parent, service, name, kind, start_ms, dur_ms, attributes, events=(), status="UNSET",
             message=None):
        return {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "name": name,
            "kind": kind,
            "start_time_unix_nano": base_ns + start_ms * MS,
            "end_time_unix_nano": base_ns + (start_ms + dur_ms) * MS,
            "status_code": status,
            "status_message": message,
            "service_name": service,
            "attributes": attributes,
            "resource_attributes": resource[service],
            "events": list(events),
        }

    failing = index % 5 == 0
    return trace_id, [
        span(root_id, None, "py-gateway", "POST /orders", "SERVER", 0, 250,
             attrs({"http.request.method": "POST", "http.response.status_code": 201,
                    "user.premium": index % 2 == 0, "sampling.ratio": 0.25, "trace.index": index}),
             status="OK"),
        span(orders_id, root_id, "py-orders", "orders.create", "SERVER", 20, 200,
             attrs({"rpc.system": "grpc", "order.items": 3, "order.total": 129.5, "order.gift": False})),
        span(validate_id, orders_id, "py-orders", "orders.validate", "INTERNAL", 30, 40,
             attrs({"rules.checked": 12, "strict": True, "score": 0.75}),
             events=[{"time_unix_nano": base_ns + 55 * MS, "name": "order.validated",
                      "attributes": attrs({"rules.failed": 0, "rules.strict": True, "latency.ms": 12.5,
                                           "verdict": "pass"})}]),
        span(db_id, orders_id, "py-db", "INSERT orders", "SERVER", 80, 100,
             attrs({"db.system": "postgresql", "db.statement": "INSERT INTO orders VALUES ($1, $2)",
                    "db.rows": 1, "db.cached": False, "db.cost": 3.25}),
             status="ERROR" if failing else "UNSET",
             message="deadlock detected" if failing else None),
    ]


def strict_diff(want, got, path):
    """Differences between produced and consumed data, types included (True is not 1)."""
    if type(want) is not type(got):
        return [f"{path}: produced {want!r} ({type(want).__name__}), got {got!r} ({type(got).__name__})"]
    if isinstance(want, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            if k not in got:
                out.append(f"{path}.{k}: missing")
            elif k not in want:
                out.append(f"{path}.{k}: unexpected field with {got[k]!r}")
            else:
                out.extend(strict_diff(want[k], got[k], f"{path}.{k}"))
        return out
    if isinstance(want, list):
        if len(want) != len(got):
            return [f"{path}: produced {len(want)} items, got {len(got)}: {got!r}"]
        out = []
        for i, (w, g) in enumerate(zip(want, got)):
            out.extend(strict_diff(w, g, f"{path}[{i}]"))
        return out
    return [] if want == got else [f"{path}: produced {want!r}, got {got!r}"]


def as_map(attributes):
    """Attributes keyed by name: their order in the array carries no meaning."""
    return {a["key"]: a["value"] for a in attributes}


def normalized(span):
    s = dict(span)
    s["attributes"] = as_map(s["attributes"])
    s["resource_attributes"] = as_map(s["resource_attributes"])
    s["events"] = [dict(e, attributes=as_map(e["attributes"])) for e in s["events"]]
    return s


def check_trace(key, trace, spans):
    """Everything wrong with one consumed trace, given the spans produced for it."""
    errors = []

    def expect(what, want, got):
        if type(want) is not type(got) or want != got:
            errors.append(f"{what}: expected {want!r}, got {got!r}")

    tid = trace["trace_id"].hex()
    expect("key trace_id", tid, (key or {}).get("trace_id"))
    expect("span_count", len(spans), trace["span_count"])
    expect("close_reason", "completed", trace["close_reason"])
    expect("amendment", False, trace["amendment"])
    expect("incomplete", False, trace["incomplete"])
    expect("root_service", "py-gateway", trace["root_service"])
    expect("root_name", spans[0]["name"], trace["root_name"])
    services = trace["services"]
    expect("services", sorted({s["service_name"] for s in spans}), services)
    expect("services are sorted", sorted(services), services)
    start = min(s["start_time_unix_nano"] for s in spans)
    end = max(s["end_time_unix_nano"] for s in spans)
    expect("start_time_unix_nano", start, trace["start_time_unix_nano"])
    expect("end_time_unix_nano", end, trace["end_time_unix_nano"])
    expect("duration_ns", end - start, trace["duration_ns"])
    expect("error_count", sum(s["status_code"] == "ERROR" for s in spans), trace["error_count"])
    produced = {s["span_id"]: s for s in spans}
    got = {s["span_id"]: s for s in trace["spans"]}
    expect("span ids", sorted(x.hex() for x in produced), sorted(x.hex() for x in got))
    for span_id, want in produced.items():
        if span_id in got:
            errors.extend(strict_diff(normalized(want), normalized(got[span_id]), f"span {span_id.hex()}"))
    return [f"trace {tid}: {e}" for e in errors]


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap, registry_url, schemas_dir = sys.argv[1:]
    with open(os.path.join(schemas_dir, "span.avsc")) as f:
        span_schema = f.read()

    registry = SchemaRegistryClient({"url": registry_url})
    serialize_span = AvroSerializer(registry, span_schema, conf={"auto.register.schemas": True})
    deserialize = AvroDeserializer(registry)  # writer schemas, fetched by id

    # Subscribe first: the group join overlaps with producing.
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"foreign-avro-roundtrip-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([TRACES_TOPIC])

    failed_deliveries = []

    def delivered(err, msg):
        if err is not None:
            failed_deliveries.append(f"{msg.topic()} key {msg.key()!r}: {err}")

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    ctx = SerializationContext(SPANS_TOPIC, MessageField.VALUE)

    def produce(trace_id, spans):
        for span in spans:
            producer.produce(SPANS_TOPIC, key=trace_id.hex(), value=serialize_span(span, ctx),
                             on_delivery=delivered)
            producer.poll(0)

    now = time.time_ns()
    traces = {}
    for i in range(TRACE_COUNT):
        trace_id, spans = make_trace(now - 5_000 * MS + i * 10 * MS, i)
        traces[trace_id.hex()] = spans
        produce(trace_id, spans)
    if producer.flush(30) or failed_deliveries:
        print("producing the traces failed:", *failed_deliveries, sep="\n")
        return 1
    push_id, push_spans = make_trace(now + PUSH_AHEAD_NS, TRACE_COUNT)
    produce(push_id, push_spans)
    if producer.flush(30) or failed_deliveries:
        print("producing the watermark trace failed:", *failed_deliveries, sep="\n")
        return 1
    log(f"produced {TRACE_COUNT} traces + 1 watermark trace ({len(push_spans) * (TRACE_COUNT + 1)} spans)")

    errors = []
    seen = set()
    deadline = time.monotonic() + CONSUME_DEADLINE_S
    next_report = time.monotonic() + 10
    try:
        while len(seen) < TRACE_COUNT and time.monotonic() < deadline:
            if time.monotonic() >= next_report:
                log(f"{len(seen)}/{TRACE_COUNT} traces so far")
                next_report += 10
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                err = msg.error()
                if err.fatal():
                    print(f"consumer failed: {err}")
                    return 1
                # e.g. the topic does not exist until spanline writes its first trace
                if err.code() != KafkaError._PARTITION_EOF:
                    log(f"consumer: {err}")
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                key = deserialize(msg.key(), SerializationContext(msg.topic(), MessageField.KEY))
                trace = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            except Exception as e:  # noqa: BLE001 - any decoding failure is a test failure
                errors.append(f"{where}: cannot decode: {e!r}")
                continue
            tid = trace["trace_id"].hex()
            if tid == push_id.hex():
                continue
            if tid not in traces:
                log(f"{where}: ignoring trace {tid}, not produced by this run")
                continue
            errors.extend(check_trace(key, trace, traces[tid]))
            seen.add(tid)
    finally:
        consumer.close()

    missing = sorted(set(traces) - seen)
    if missing:
        errors.append(f"{len(missing)} of {TRACE_COUNT} traces not on {TRACES_TOPIC} within "
                      f"{CONSUME_DEADLINE_S}s: {', '.join(missing)}")
    errors.extend(check_aggregates(bootstrap, deserialize, traces))
    if errors:
        print(f"FAILED: {len(errors)} differences")
        print("\n".join(errors))
        return 1
    print(f"ok: {len(seen)} traces, aggregates match")
    return 0


def check_aggregates(bootstrap, deserialize, traces):
    """Reads `aggregates` with the AvroDeserializer: the 10 s windows of scope `service`
    must count exactly the spans produced per service."""
    want = {}
    for spans in traces.values():
        for span in spans:
            want[span["service_name"]] = want.get(span["service_name"], 0) + 1
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"foreign-avro-aggregates-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([AGGREGATES_TOPIC])
    got = {}
    records = 0
    deadline = time.monotonic() + CONSUME_DEADLINE_S
    try:
        while got != want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            key = deserialize(msg.key(), SerializationContext(msg.topic(), MessageField.KEY))
            agg = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            records += 1
            if not key["key"].startswith(agg["scope"]):
                return [f"aggregate key {key['key']!r} does not name scope {agg['scope']!r}"]
            if agg["scope"] != "service" or agg["window_size_ns"] != 10 * 1_000_000_000:
                continue
            service = {d["name"]: d["value"] for d in agg["dimensions"]}["service"]
            if service in want:
                got[service] = got.get(service, 0) + agg["count"]
                if not agg["latency_min_ns"] <= agg["latency_p50_ns"] <= agg["latency_max_ns"] * 1.01:
                    return [f"{service}: p50 {agg['latency_p50_ns']} outside [min, max]"]
    finally:
        consumer.close()
    log(f"read {records} aggregate records")
    if got != want:
        return [f"span counts per service on {AGGREGATES_TOPIC}: want {want}, got {got}"]
    return []


if __name__ == "__main__":
    sys.exit(main())
