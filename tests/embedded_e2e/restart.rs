//! A crash mid-window, without a flush or a final commit, then a new process in the same
//! group: no span is lost and the traces left open are rebuilt whole.

use std::collections::BTreeSet;
use std::time::Duration;

use spanline::codec::avro;
use spanline::kafka::registry_client::RegistryClient;
use spanline::model::Span;

use super::records::{
    decode_traces, flush, framed, producer, pushers, read_until, send, traces, wait_for_commit,
};
use super::{env, now_ns, pipeline, start, S};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_window_then_restart_loses_no_span() {
    let env = env(&["spans", "traces", "spans-late"]).await;
    let sr = RegistryClient::new(env.registry.url(), None, None).unwrap();
    let id = sr.register("spans-value", avro::SPAN_SCHEMA).await.unwrap();
    let sources = "  - {name: spans, topics: [spans], format: avro}";
    let p = producer(&env);
    let base = now_ns();

    // first run: 10 complete traces, and 10 traces whose roots have not arrived yet
    let (_stop_a, task_a) = start(&env, pipeline("g-crash", sources, "avro"));
    let done = traces(400, 10, base);
    let open = traces(500, 10, base + 10 * S);
    for (i, s) in done.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    let (open_roots, open_children): (Vec<Span>, Vec<Span>) =
        open.into_iter().partition(|s| s.is_root());
    for (i, s) in open_children.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(950, base + 8 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);
    let first = read_until(&env, "traces", Duration::from_secs(60), |r| r.len() >= 10);
    assert!(
        first.len() >= 10,
        "the complete traces closed before the crash"
    );
    // wait until the group has committed something, then crash: no flush, no final commit
    assert!(
        wait_for_commit(&env, "g-crash", Duration::from_secs(30)),
        "no offset was committed"
    );
    task_a.abort();
    let _ = task_a.await;

    // the missing roots arrive; a new process in the same group takes over
    for (i, s) in open_roots.iter().enumerate() {
        send(&p, "spans", (i % 3) as i32, &framed(id, s));
    }
    for (part, s) in pushers(960, base + 60 * S) {
        send(&p, "spans", part, &framed(id, &s));
    }
    flush(&p);
    let (stop_b, task_b) = start(&env, pipeline("g-crash", sources, "avro"));
    let all = read_until(&env, "traces", Duration::from_secs(90), |r| {
        let d = decode_traces(r);
        (500..510u128).all(|t| d.iter().any(|x| x.0 == t && x.1.len() == 4))
    });
    let decoded = decode_traces(&all);
    // every span produced is in the traces topic, and the reopened traces are whole
    for t in (400..410u128).chain(500..510) {
        let spans: BTreeSet<u64> = decoded
            .iter()
            .filter(|x| x.0 == t)
            .flat_map(|x| x.1.iter().copied())
            .collect();
        assert_eq!(
            spans,
            BTreeSet::from([1, 2, 3, 4]),
            "trace {t} lost spans across the crash"
        );
    }
    for t in 500..510u128 {
        assert!(
            decoded
                .iter()
                .any(|x| x.0 == t && x.1.len() == 4 && x.2 == "completed"),
            "trace {t} rebuilt whole after restart"
        );
    }
    let _ = stop_b.send(());
    task_b.await.unwrap().unwrap();
}
