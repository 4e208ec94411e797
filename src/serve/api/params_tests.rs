use super::*;

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn go_durations_parse_like_time_parse_duration() {
    assert_eq!(go_duration("1.2ms"), Ok(1_200_000));
    assert_eq!(go_duration("100ms"), Ok(100_000_000));
    assert_eq!(go_duration("1s"), Ok(1_000_000_000));
    assert_eq!(go_duration("1m30s"), Ok(90_000_000_000));
    assert_eq!(go_duration("10us"), Ok(10_000));
    assert_eq!(go_duration("10µs"), Ok(10_000));
    assert_eq!(go_duration("0"), Ok(0));
    for bad in ["", "5", "ms", "1.2.3s", "1d", "abc", "1s2"] {
        assert!(go_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_full_search_parses_into_a_trace_query() {
    let s = trace_search(&p(&[
        ("service", "orders"),
        ("operation", "GET /orders"),
        ("tags", r#"{"http.status_code":"500","error":true}"#),
        ("tag", "span.kind:server"),
        ("minDuration", "1.2ms"),
        ("maxDuration", "1s"),
        ("start", "1700000000000000"),
        ("end", "1700000060000000"),
        ("limit", "50"),
        ("lookback", "1h"),
    ]))
    .unwrap();
    let q = s.query;
    assert_eq!(q.service.as_deref(), Some("orders"));
    assert_eq!(q.operation.as_deref(), Some("GET /orders"));
    let mut tags = q.tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("error".to_string(), "true".to_string()),
            ("http.status_code".to_string(), "500".to_string()),
            ("span.kind".to_string(), "server".to_string()),
        ]
    );
    assert_eq!(q.min_duration_ns, Some(1_200_000));
    assert_eq!(q.max_duration_ns, Some(1_000_000_000));
    assert_eq!(q.start_ns, Some(1_700_000_000_000_000_000));
    assert_eq!(q.end_ns, Some(1_700_000_060_000_000_000));
    assert_eq!(q.limit, 50);
    assert!(s.trace_ids.is_empty());
}

#[test]
fn limits_default_and_are_capped() {
    assert_eq!(trace_search(&[]).unwrap().query.limit, DEFAULT_SEARCH_LIMIT);
    let q = trace_search(&p(&[("limit", "1000000")])).unwrap().query;
    assert_eq!(q.limit, MAX_SEARCH_LIMIT);
    assert_eq!(trace_search(&p(&[("limit", "")])).unwrap().query.limit, 20);
}

#[test]
fn bad_parameters_are_named() {
    for (pairs, name) in [
        (vec![("limit", "-1")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("minDuration", "fast")], "minDuration"),
        (vec![("maxDuration", "1x")], "maxDuration"),
        (
            vec![("minDuration", "2s"), ("maxDuration", "1s")],
            "maxDuration",
        ),
        (vec![("start", "yesterday")], "start"),
        (vec![("end", "1e9")], "end"),
        (vec![("start", "20"), ("end", "10")], "start"),
        (vec![("tags", "{not json")], "tags"),
        (vec![("tags", r#"{"a":{"b":1}}"#)], "tags"),
        (vec![("tags", "novalue")], "tags"),
        (vec![("tag", "novalue")], "tag"),
        (vec![("operation", "x")], "operation"),
        (vec![("traceID", "xyz")], "traceID"),
        (vec![("traceID", "0")], "traceID"),
    ] {
        let err = trace_search(&p(&pairs)).unwrap_err();
        assert_eq!(err.parameter, name, "{pairs:?}: {err}");
        assert!(err.to_string().contains(name));
    }
}

#[test]
fn logfmt_tags_and_trace_ids() {
    assert_eq!(
        tags(r#"error=true http.method="GET""#).unwrap(),
        vec![
            ("error".to_string(), "true".to_string()),
            ("http.method".to_string(), "GET".to_string())
        ]
    );
    let s = trace_search(&p(&[("traceID", "abc"), ("traceID", &"f".repeat(32))])).unwrap();
    assert_eq!(s.trace_ids, vec![0xabc, u128::MAX]);
    assert!(trace_id("traceID", &"1".repeat(33)).is_err());
}

#[test]
fn dependency_parameters_are_milliseconds() {
    assert_eq!(
        dependencies(&p(&[("endTs", "2000"), ("lookback", "500")]), 0),
        Ok((2_000_000_000, 500_000_000))
    );
    assert_eq!(
        dependencies(&[], 5),
        Ok((5_000_000, DEFAULT_DEPENDENCY_LOOKBACK_MS * 1_000_000))
    );
    assert_eq!(
        dependencies(&p(&[("lookback", "-3")]), 0)
            .unwrap_err()
            .parameter,
        "lookback"
    );
    assert_eq!(
        dependencies(&p(&[("endTs", "now")]), 0)
            .unwrap_err()
            .parameter,
        "endTs"
    );
}
