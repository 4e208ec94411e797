use std::time::Duration;

use super::*;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

const DEFAULT: &str = include_str!("../../pipelines/trace-analytics.yaml");

#[test]
fn default_pipeline_loads_with_embedded_defaults() {
    let p = load_str(DEFAULT, env(&[])).unwrap();
    assert_eq!(p.kafka.brokers, "embedded");
    assert_eq!(p.schema_registry.as_ref().unwrap().url, "embedded");
    let a = p.assemble().unwrap();
    assert_eq!(p.analyze().unwrap().n_plus_one_min_calls, 3);
    assert_eq!(p.analyze().unwrap().dominant_dependency_share, 0.8);
    assert_eq!(a.idle_gap, Duration::from_secs(5));
    assert_eq!(a.max_duration, Duration::from_secs(300));
    assert_eq!(p.outputs.late.unwrap().topic, "spans-late");
}

#[test]
fn environment_is_interpolated_with_defaults() {
    let p = load_str(DEFAULT, env(&[("SPANLINE_BROKERS", "k1:9092,k2:9092")])).unwrap();
    assert_eq!(p.kafka.brokers, "k1:9092,k2:9092");
    let mut errors = ConfigErrors::default();
    assert_eq!(
        interpolate("a: ${X:-5s} $$ ${Y}", env(&[("Y", "y")]), &mut errors),
        "a: 5s $ y"
    );
    assert!(errors.is_empty());
    interpolate("a: ${MISSING}\nb: ${bad name}", env(&[]), &mut errors);
    assert_eq!(errors.0.len(), 2);
    assert_eq!(errors.0[0].path, "line 1");
    assert!(errors.0[0].hint.contains("${MISSING:-default}"));
    assert_eq!(errors.0[1].path, "line 2");
}

#[test]
fn durations_read_as_written() {
    let text = DEFAULT
        .replace("idle_gap: 5s", "idle_gap: 250ms")
        .replace("grace: 1m", "grace: 5m");
    let p = load_str(&text, env(&[])).unwrap();
    let a = p.assemble().unwrap();
    assert_eq!(a.idle_gap, Duration::from_millis(250));
    assert_eq!(a.grace, Duration::from_secs(300));
}

#[test]
fn every_error_is_reported_at_once_with_its_path_and_a_hint() {
    let text = DEFAULT
        .replace("group_id:", "groupid:")
        .replace("idle_gap: 5s", "idle_gap: 5 sekonds")
        .replace(
            "max_open_traces: 200000",
            "max_open_traces: 200000\n    max_open_trace: 5\n    windw: 1",
        )
        .replace(
            "format: avro\n    dead_letter_topic",
            "format: parquet\n    dead_letter_topic",
        )
        .replace("http:", "htp:");
    let errors = load_str(&text, env(&[])).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "htp",
        "kafka.groupid",
        "kafka.group_id",
        "sources[0].format",
        "stages[0].max_open_trace",
        "stages[0].windw",
        "stages[0].idle_gap",
    ] {
        assert!(
            paths.contains(&expected),
            "missing {expected} in {paths:?}\n{errors}"
        );
    }
    let typo = errors
        .0
        .iter()
        .find(|e| e.path == "stages[0].max_open_trace")
        .unwrap();
    assert_eq!(typo.hint, "did you mean `max_open_traces`?");
    let top = errors.0.iter().find(|e| e.path == "htp").unwrap();
    assert_eq!(top.hint, "did you mean `http`?");
    let dur = errors
        .0
        .iter()
        .find(|e| e.path == "stages[0].idle_gap")
        .unwrap();
    assert!(
        dur.message.contains("write e.g. 250ms, 10s, 5m"),
        "{}",
        dur.message
    );
}

#[test]
fn semantic_errors_are_all_collected() {
    let text = DEFAULT
        .replace("idle_gap: 5s", "idle_gap: 10m")
        .replace("topic: traces", "topic: spans")
        .replace("topics: [spans]", "topics: [spans, \"bad topic\"]")
        .replace("max_span_bytes: 65536", "max_span_bytes: 10");
    let errors = load_str(&text, env(&[])).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"stages[0].idle_gap"), "{errors}");
    assert!(paths.contains(&"stages[0].max_span_bytes"), "{errors}");
    assert!(paths.contains(&"sources[0].topics[1]"), "{errors}");
    assert!(paths.contains(&"outputs.traces.topic"), "{errors}");
    let msg = errors.to_string();
    assert!(
        msg.contains("stages[0].idle_gap: must be less than max_duration (5m)"),
        "{msg}"
    );
}

#[test]
fn unknown_stage_type_and_missing_sections() {
    let errors = load_str("name: x\nstages:\n  - type: asemble\n", env(&[])).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"stages[0].type"));
    assert!(paths.contains(&"kafka") && paths.contains(&"sources") && paths.contains(&"outputs"));
    let t = errors
        .0
        .iter()
        .find(|e| e.path == "stages[0].type")
        .unwrap();
    assert_eq!(t.hint, "did you mean `assemble`?");
}

#[test]
fn bad_yaml_is_one_clear_error() {
    let errors = load_str("name: [unclosed", env(&[])).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert!(errors.0[0].message.starts_with("not valid yaml"));
}

#[test]
fn every_pipeline_file_in_the_repo_is_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[test]
fn aggregate_stage_reads_windows_hop_and_dimensions() {
    let p = load_str(DEFAULT, env(&[])).unwrap();
    let a = p.aggregate().unwrap();
    assert_eq!(
        a.windows,
        vec![Duration::from_secs(10), Duration::from_secs(60)]
    );
    assert_eq!(
        a.dimensions["operation"],
        vec!["service", "operation", "span_kind"]
    );
    let settings = a.settings();
    assert_eq!(settings.windows[0].size_ns, 10_000_000_000);
    assert_eq!(settings.dimension_sets.len(), 4);
    assert_eq!(p.outputs.aggregates.as_ref().unwrap().topic, "aggregates");

    let hopping = DEFAULT.replace("windows: [10s, 1m]", "windows: [10s, 1m]\n    hop: 10s");
    let p = load_str(&hopping, env(&[])).unwrap();
    assert_eq!(
        p.aggregate().unwrap().settings().windows[0].hop_ns,
        Some(10_000_000_000)
    );
}

#[test]
fn aggregate_errors_name_the_bad_dimension_and_window() {
    let text = DEFAULT
        .replace("agent: [agent]", "agent: [agnet]")
        .replace("windows: [10s, 1m]", "windows: [10s, 1m]\n    hop: 7s")
        .replace("max_series: 10000", "max_series: 0");
    let errors = load_str(&text, env(&[])).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"stages[2].dimensions.agent[0]"), "{errors}");
    assert!(paths.contains(&"stages[2].hop"), "{errors}");
    assert!(paths.contains(&"stages[2].max_series"), "{errors}");
    // service graph edges come from analysis
    let no_analyze = DEFAULT.replace("  - type: analyze\n", "  - type: analyze_removed\n");
    let errors = load_str(&no_analyze, env(&[])).unwrap_err();
    assert!(
        errors.0.iter().any(|e| e.path == "stages[1].type"),
        "{errors}"
    );
    let text = DEFAULT.replace(
        "  - type: analyze\n    n_plus_one_min_calls: 3\n    dominant_dependency_share: 0.8\n    parallelizable_min_siblings: 2\n    parallelizable_min_saving_share: 0.25\n\n",
        "",
    );
    let errors = load_str(&text, env(&[])).unwrap_err();
    assert!(
        errors.0.iter().any(|e| e.path == "stages[1].service_graph"),
        "{errors}"
    );
}

#[test]
fn delivery_is_at_least_once_unless_the_file_says_exactly_once() {
    let p = load_str(DEFAULT, env(&[])).unwrap();
    assert_eq!(p.delivery, Delivery::AtLeastOnce);
    let on_kafka = DEFAULT.replace("brokers: ${SPANLINE_BROKERS:-embedded}", "brokers: k:9092");
    assert_ne!(
        on_kafka, DEFAULT,
        "the default pipeline names its brokers so"
    );
    let p = load_str(&format!("{on_kafka}\ndelivery: exactly_once\n"), env(&[])).unwrap();
    assert_eq!(p.delivery, Delivery::ExactlyOnce);
    let e = load_str(&format!("{on_kafka}\ndelivery: exactly_twice\n"), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("delivery"), "{e}");
    let e = load_str(&format!("{DEFAULT}\ndelivery: exactly_once\n"), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("transaction markers"), "{e}");
}
