//! The compose stack's Alertmanager configuration (deploy/alertmanager.yml), receiver by
//! receiver: a real Alertmanager runs it with every receiver pointed at a local stand-in
//! (HTTP servers for Slack, PagerDuty, OpsGenie and the webhook; an SMTP sink for email),
//! spanline's alert sink posts an alert, and each stand-in must get spanline's summary,
//! suspected service and the link to the trace in spanline's UI.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use serde_yaml::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use spanline::model::{Alert, AlertStatus};
use spanline::sinks::{AlertSinks, AlertSinksConfig, AlertmanagerConfig};
use support::Alertmanager;

const UI: &str = "http://spanline.test:9464";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SUMMARY: &str = "checkout error rate 42% (baseline 0.5%)";
const SUSPECT: &str = "payments-db";
const INCIDENT: &str = "a3f0c2d9e8b71456";

/// What the stand-ins received: (receiver, request text).
type Inbox = Arc<Mutex<Vec<(String, String)>>>;

/// One HTTP server for every HTTP receiver; the first path segment names the receiver.
async fn http_stand_in(inbox: Inbox) -> u16 {
    async fn receive(State(inbox): State<Inbox>, uri: Uri, body: Bytes) -> &'static str {
        let receiver = uri.path().trim_start_matches('/');
        let receiver = receiver.split('/').next().unwrap_or_default().to_string();
        let text = format!("{uri}\n{}", String::from_utf8_lossy(&body));
        inbox.lock().unwrap().push((receiver, text));
        "{\"status\":\"success\"}"
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(receive).with_state(inbox);
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// An SMTP server that accepts every message (no TLS, no auth) and keeps it.
async fn smtp_stand_in(inbox: Inbox) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut message = String::new();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let text = std::mem::take(&mut message);
                            inbox.lock().unwrap().push(("email".into(), text));
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            message.push_str(&line);
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    port
}

/// deploy/alertmanager.yml with every receiver pointed at the stand-ins and short waits.
fn config_for_stand_ins(http: u16, smtp: u16) -> (String, Vec<String>) {
    let path = support::repo_root().join("deploy/alertmanager.yml");
    let mut doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let global = doc["global"].as_mapping_mut().unwrap();
    global.insert("smtp_smarthost".into(), format!("127.0.0.1:{smtp}").into());
    global.insert("smtp_require_tls".into(), false.into());
    // Alertmanager flushes a new group at once when its first alert started more than
    // `group_wait` ago, racing the second alert of the same POST: the alerts here start
    // when they are sent, so both are in the group when it is flushed a second later.
    doc["route"]["group_wait"] = "1s".into();
    let mut kinds = Vec::new();
    for receiver in doc["receivers"].as_sequence_mut().unwrap() {
        let name = receiver["name"].as_str().unwrap().to_string();
        for (kind, field) in [
            ("slack_configs", "api_url"),
            ("pagerduty_configs", "url"),
            ("opsgenie_configs", "api_url"),
            ("webhook_configs", "url"),
            ("email_configs", ""),
        ] {
            let Some(configs) = receiver.get_mut(kind).and_then(Value::as_sequence_mut) else {
                continue;
            };
            kinds.push(kind.to_string());
            for c in configs {
                if !field.is_empty() {
                    let url = format!("http://127.0.0.1:{http}/{name}/");
                    c.as_mapping_mut().unwrap().insert(field.into(), url.into());
                }
            }
        }
    }
    (serde_yaml::to_string(&doc).unwrap(), kinds)
}

fn alert() -> Alert {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Alert {
        fingerprint: "7d1c5e0a2b9f4e31".into(),
        status: AlertStatus::Firing,
        rule: "service_errors".into(),
        severity: "critical".into(),
        starts_at_ms: now,
        ends_at_ms: None,
        labels: BTreeMap::from([
            ("alertname".to_owned(), "service_errors".to_owned()),
            ("service".to_owned(), "checkout".to_owned()),
        ]),
        annotations: BTreeMap::from([
            ("notification".to_owned(), "new".to_owned()),
            ("incident".to_owned(), INCIDENT.to_owned()),
            ("incident_cause".to_owned(), SUSPECT.to_owned()),
        ]),
        summary: SUMMARY.into(),
        suspected_service: Some(SUSPECT.into()),
        suspected_services: vec![],
        score: 0.93,
        value: Some(0.42),
        exemplar_trace_ids: vec![TRACE.into()],
    }
}

/// A symptom of the same incident: another rule on a caller, filed under `alert()`'s.
fn symptom() -> Alert {
    let mut a = alert();
    a.fingerprint = "0c4e1d6b9a2f8e73".into();
    a.rule = "service_latency".into();
    a.labels = BTreeMap::from([
        ("alertname".to_owned(), "service_latency".to_owned()),
        ("service".to_owned(), "storefront".to_owned()),
    ]);
    a.annotations
        .insert("notification".to_owned(), "grouped".to_owned());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_receiver_gets_the_summary_suspect_and_trace_link() {
    let inbox: Inbox = Arc::default();
    let http = http_stand_in(inbox.clone()).await;
    let smtp = smtp_stand_in(inbox.clone()).await;
    let (config, kinds) = config_for_stand_ins(http, smtp);
    for kind in [
        "slack_configs",
        "email_configs",
        "pagerduty_configs",
        "opsgenie_configs",
        "webhook_configs",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} in deploy/alertmanager.yml"
        );
    }
    let Some(am) = Alertmanager::start_or_skip(&config).await else {
        return;
    };
    let (sinks, handle) = AlertSinks::start(AlertSinksConfig {
        alertmanager: Some(AlertmanagerConfig::new(am.url())),
        ui_url: Some(UI.into()),
        ..AlertSinksConfig::default()
    });
    // one fault: the alert on its cause and a symptom on a caller, one incident
    sinks.send(&[alert(), symptom()]);

    let link = format!("{UI}/#/trace/{TRACE}");
    let receivers = ["slack", "email", "pagerduty", "opsgenie", "webhook"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = inbox.lock().unwrap().clone();
        let missing: Vec<&str> = receivers
            .iter()
            .copied()
            .filter(|r| !got.iter().any(|(name, _)| name == r))
            .collect();
        if missing.is_empty() {
            for r in receivers {
                let (_, text) = got.iter().find(|(name, _)| name == r).unwrap();
                // email bodies are quoted-printable: join soft line breaks first
                let text = text.replace("=\n", "").replace("=3D", "=");
                for wanted in [SUMMARY, SUSPECT, link.as_str()] {
                    assert!(text.contains(wanted), "{r} lacks {wanted:?}:\n{text}");
                }
            }
            // grouped by incident: one notification carries both alerts
            let (_, hook) = got.iter().find(|(name, _)| name == "webhook").unwrap();
            let body = hook.split_once('\n').map_or("", |(_, b)| b);
            let payload: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(payload["groupLabels"]["incident"], INCIDENT, "{hook}");
            assert_eq!(
                payload["alerts"].as_array().map(Vec::len),
                Some(2),
                "{hook}"
            );
            let (_, slack) = got.iter().find(|(name, _)| name == "slack").unwrap();
            let title = format!("incident on {SUSPECT}: 2 alerts");
            assert!(slack.contains(&title), "slack lacks {title:?}:\n{slack}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no notification for {missing:?} within 60s; got {got:#?}\n{}",
            am.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sinks.shutdown(Duration::from_secs(5));
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
}
