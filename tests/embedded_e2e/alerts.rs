//! Alerts on the alerts topic: keyed by their fingerprint, one firing per busy service,
//! and each record's acknowledgement timed.

use std::collections::BTreeSet;
use std::time::Duration;

use spanline::codec::avro;
use spanline::kafka::registry_client::RegistryClient;

use super::records::{flush, framed, producer, pushers, read_until, send, traces};
use super::{env, now_ns, pipeline_with, start, S};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_their_topic_keyed_by_fingerprint_and_their_acknowledgement_is_timed() {
    let env = env(&["spans", "traces", "spans-late", "aggregates", "alerts"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let config = pipeline_with(
        "g-alerts",
        "  - {name: spans, topics: [spans], format: avro}",
        "json",
        r#"
  - type: aggregate
    windows: [10s]
    dimensions:
      service: [service]
    service_graph: false
  - type: alert
    group_wait: 0s
    rules:
      - name: busy_service
        severity: warning
        for: 0s
        series: {scope: service, window: 10s}
        threshold: {field: count, above: 0}
        annotations:
          summary: "{{service}} served {{value}} spans"
"#,
    );
    let acked_before = spanline::telemetry::metrics::ALERT_ACK_LATENCY.get_sample_count();
    let base = now_ns() / (10 * S) * (10 * S);
    let p = producer(&env);
    for (i, s) in traces(1, 20, base).iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(900, base + 120 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);

    let (stop, task) = start(&env, config);
    let services = ["cache", "db", "gateway", "orders"];
    let got = read_until(&env, "alerts", Duration::from_secs(60), |r| {
        r.len() >= services.len()
    });
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let mut fired = BTreeSet::new();
    for r in &got {
        let alert: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            r.key,
            alert["fingerprint"].as_str().unwrap().as_bytes(),
            "the record key is the fingerprint: {alert}"
        );
        assert_eq!(alert["rule"], "busy_service");
        if alert["status"] == "firing" {
            fired.insert(alert["labels"]["service"].as_str().unwrap().to_string());
        }
    }
    let want: BTreeSet<String> = services.iter().map(|s| s.to_string()).collect();
    assert!(
        want.is_subset(&fired),
        "firing alerts for {fired:?}, want {want:?}"
    );
    let acked = spanline::telemetry::metrics::ALERT_ACK_LATENCY.get_sample_count() - acked_before;
    assert!(
        acked >= services.len() as u64,
        "{acked} alert acknowledgements timed for {} alert records",
        got.len()
    );
}
