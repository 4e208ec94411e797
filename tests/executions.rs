//! Running executions on a running demo: `GET /api/spanline/executions` lists the traces the
//! pipeline holds open, oldest first, with their spans so far, services and root.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Demo;

#[test]
fn the_demo_lists_its_open_traces_while_they_run() {
    let demo = Demo::start_with_args(
        Path::new(env!("CARGO_BIN_EXE_spanline")),
        &[
            "demo",
            "--duration",
            "120s",
            "--http",
            "127.0.0.1:0",
            "--rate",
            "50",
        ],
    );
    let base = demo.metrics().trim_end_matches("/metrics").to_string();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |query: &str| {
        let r = client
            .get(format!("{base}/api/spanline/executions{query}"))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap())
    };

    // spans flow once the workload runs: wait for open traces to show
    let deadline = Instant::now() + Duration::from_secs(90);
    let body = loop {
        let (status, body) = get("?limit=5");
        // 503 until the pipeline runs (it answers from its loop, once started)
        assert!(
            [200, 503].contains(&status),
            "{body}\n{}",
            demo.output_tail(20)
        );
        if status == 200
            && body["data"]["traces"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no open trace listed: {body}\n{}",
            demo.output_tail(20)
        );
        std::thread::park_timeout(Duration::from_millis(300));
    };
    let data = &body["data"];
    let traces = data["traces"].as_array().unwrap();
    assert!(traces.len() <= 5, "{body}");
    let open = data["openTraces"].as_u64().unwrap() as usize;
    assert!(open >= traces.len(), "{body}");
    assert_eq!(body["total"].as_u64().unwrap() as usize, open);
    let mut previous_start = f64::MIN;
    for t in traces {
        let id = t["traceID"].as_str().unwrap();
        assert_eq!(id.len(), 32, "{t}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        assert!(t["spans"].as_u64().unwrap() >= 1, "{t}");
        let start = t["startMs"].as_f64().unwrap();
        assert!(start <= t["lastEndMs"].as_f64().unwrap(), "{t}");
        assert!(t["ageMs"].is_number(), "{t}");
        assert!(start >= previous_start, "oldest first: {body}");
        previous_start = start;
        assert!(!t["services"].as_array().unwrap().is_empty(), "{t}");
    }

    // a service filter lists only traces with a span of that service
    let service = traces[0]["services"][0].as_str().unwrap().to_string();
    let (status, filtered) = get(&format!("?service={service}&limit=50"));
    assert_eq!(status, 200, "{filtered}");
    for t in filtered["data"]["traces"].as_array().unwrap() {
        let services: Vec<&str> = t["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(services.contains(&service.as_str()), "{t}");
    }

    // bad requests: 400, naming the parameter, in the API's error shape
    for (query, parameter) in [("?limit=0", "limit"), ("?limt=3", "query")] {
        let (status, body) = get(query);
        assert_eq!(status, 400, "{query}: {body}");
        let msg = body["errors"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("'{parameter}'")), "{query}: {msg}");
        assert_eq!(body["errors"][0]["code"], 400);
    }
}
