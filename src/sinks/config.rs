//! Settings of the alert destinations: where alerts go, how much may wait, how deliveries
//! are retried.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ConfigErrors;

/// Where alerts are delivered and how.
///
/// ```yaml
/// alertmanager:
///   url: http://alertmanager:9093
///   timeout: 10s
/// webhooks:
///   - url: https://hooks.example.com/spanline
///     timeout: 5s
///     headers:
///       Authorization: Bearer ${HOOK_TOKEN}
/// queue_capacity: 1024
/// max_retries: 5
/// initial_backoff: 500ms
/// max_backoff: 30s
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertSinksConfig {
    /// A Prometheus Alertmanager: alerts are posted to `{url}/api/v2/alerts`.
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// HTTP endpoints that receive Alertmanager's webhook payload (version 4).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Alerts waiting per destination at most. When a destination falls this far behind
    /// (it is down, or slow) the oldest waiting alert is dropped and counted, so the
    /// newest state of every alert is what is delivered. Default 1024.
    #[serde(default = "d_queue_capacity")]
    pub queue_capacity: usize,
    /// Retries of a failed request (connection error, timeout, HTTP 408, 429 or 5xx)
    /// before its alerts are counted as failed; other HTTP errors are not retried.
    /// Default 5.
    #[serde(default = "d_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; each further retry waits twice as long, up to
    /// `max_backoff`, less a random share of up to half. Default 500ms.
    #[serde(default = "d_initial_backoff", with = "duration")]
    pub initial_backoff: Duration,
    /// Longest wait between retries. Default 30s.
    #[serde(default = "d_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// Link sent as each alert's `generatorURL` and as the webhook payload's
    /// `externalURL`, e.g. a dashboard; left out (empty in webhooks) when unset.
    #[serde(default)]
    pub generator_url: Option<String>,
    /// spanline's web UI as the people notified reach it, e.g.
    /// `https://spanline.example.com`: each alert with exemplar traces then carries the
    /// annotation `trace_url`, its first exemplar trace in the UI.
    #[serde(default)]
    pub ui_url: Option<String>,
}

/// A Prometheus Alertmanager.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093` (with its route prefix, if any).
    pub url: String,
    /// Time one request may take, connecting included. Default 10s.
    #[serde(default = "d_timeout", with = "duration")]
    pub timeout: Duration,
}

/// An HTTP endpoint receiving the Alertmanager webhook payload.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL the payload is POSTed to.
    pub url: String,
    /// Time one request may take, connecting included. Default 10s.
    #[serde(default = "d_timeout", with = "duration")]
    pub timeout: Duration,
    /// Extra request headers, e.g. `Authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn d_queue_capacity() -> usize {
    1024
}
fn d_max_retries() -> u32 {
    5
}
fn d_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn d_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn d_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for AlertSinksConfig {
    fn default() -> Self {
        AlertSinksConfig {
            alertmanager: None,
            webhooks: Vec::new(),
            queue_capacity: d_queue_capacity(),
            max_retries: d_max_retries(),
            initial_backoff: d_initial_backoff(),
            max_backoff: d_max_backoff(),
            generator_url: None,
            ui_url: None,
        }
    }
}

impl AlertmanagerConfig {
    /// An Alertmanager at `url` with the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        AlertmanagerConfig {
            url: url.into(),
            timeout: d_timeout(),
        }
    }
}

impl WebhookConfig {
    /// A webhook at `url` with the default timeout and no extra headers.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            timeout: d_timeout(),
            headers: BTreeMap::new(),
        }
    }
}

/// Retries above this are surely a mistake (with the default backoff, hours of retrying).
const MAX_RETRIES_LIMIT: u32 = 100;
/// Queues above this hold more alerts than any destination can usefully catch up on.
const QUEUE_CAPACITY_LIMIT: usize = 1_000_000;

impl AlertSinksConfig {
    /// Records every problem, each under `path` (the YAML path of this section).
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) {
        if self.alertmanager.is_none() && self.webhooks.is_empty() {
            errors.push(
                path,
                "has no destination",
                "set `alertmanager.url` or add an entry to `webhooks`",
            );
        }
        if let Some(am) = &self.alertmanager {
            check_url(errors, &format!("{path}.alertmanager.url"), &am.url);
            check_timeout(errors, &format!("{path}.alertmanager.timeout"), am.timeout);
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let at = format!("{path}.webhooks[{i}]");
            check_url(errors, &format!("{at}.url"), &hook.url);
            check_timeout(errors, &format!("{at}.timeout"), hook.timeout);
            for (name, value) in &hook.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    errors.push(
                        format!("{at}.headers"),
                        format!("`{name}` is not a valid header name"),
                        "use letters, digits and - only, e.g. Authorization",
                    );
                } else if reqwest::header::HeaderValue::from_str(value).is_err() {
                    errors.push(
                        format!("{at}.headers.{name}"),
                        "is not a valid header value",
                        "use visible ASCII characters, no line breaks",
                    );
                }
            }
        }
        if self.queue_capacity == 0 || self.queue_capacity > QUEUE_CAPACITY_LIMIT {
            errors.push(
                format!("{path}.queue_capacity"),
                format!("must be between 1 and {QUEUE_CAPACITY_LIMIT}"),
                "e.g. 1024",
            );
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            errors.push(
                format!("{path}.max_retries"),
                format!("must be at most {MAX_RETRIES_LIMIT}"),
                "e.g. 5",
            );
        }
        if self.initial_backoff.is_zero() {
            errors.push(
                format!("{path}.initial_backoff"),
                "must be more than 0",
                "e.g. 500ms",
            );
        }
        if self.max_backoff < self.initial_backoff {
            errors.push(
                format!("{path}.max_backoff"),
                format!(
                    "must be at least initial_backoff ({})",
                    humantime::format_duration(self.initial_backoff)
                ),
                "raise max_backoff or lower initial_backoff",
            );
        }
        if let Some(url) = &self.generator_url {
            check_url(errors, &format!("{path}.generator_url"), url);
        }
        if let Some(url) = &self.ui_url {
            check_url(errors, &format!("{path}.ui_url"), url);
        }
    }
}

fn check_url(errors: &mut ConfigErrors, path: &str, url: &str) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => errors.push(
            path,
            format!("`{url}` is not an http or https URL"),
            "e.g. http://alertmanager:9093",
        ),
        Err(e) => errors.push(
            path,
            format!("`{url}` is not a valid URL ({e})"),
            "e.g. http://alertmanager:9093",
        ),
    }
}

fn check_timeout(errors: &mut ConfigErrors, path: &str, timeout: Duration) {
    if timeout.is_zero() {
        errors.push(path, "must be more than 0", "e.g. 10s");
    }
}

/// Durations as `250ms`, `10s`, `5m`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{text}` ({e}); write e.g. 250ms, 10s, 5m"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AlertSinksConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    fn problems(config: &AlertSinksConfig) -> Vec<String> {
        let mut errors = ConfigErrors::default();
        config.validate("alerting.sinks", &mut errors);
        errors.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_fill_everything_but_destinations() {
        let c = parse("alertmanager: {url: 'http://am:9093'}").unwrap();
        assert_eq!(
            c.alertmanager,
            Some(AlertmanagerConfig::new("http://am:9093"))
        );
        assert_eq!(
            c,
            AlertSinksConfig {
                alertmanager: Some(AlertmanagerConfig::new("http://am:9093")),
                ..AlertSinksConfig::default()
            }
        );
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn full_example_parses_and_is_valid() {
        let c = parse(
            "alertmanager:\n  url: http://am:9093\n  timeout: 3s\n\
             webhooks:\n  - url: https://hooks.example.com/x\n    timeout: 250ms\n    headers:\n      Authorization: Bearer abc\n\
             queue_capacity: 10\nmax_retries: 2\ninitial_backoff: 10ms\nmax_backoff: 1s\n\
             generator_url: http://spanline:9464/metrics\n",
        )
        .unwrap();
        assert_eq!(
            c.alertmanager.as_ref().unwrap().timeout,
            Duration::from_secs(3)
        );
        assert_eq!(c.webhooks[0].timeout, Duration::from_millis(250));
        assert_eq!(c.webhooks[0].headers["Authorization"], "Bearer abc");
        assert_eq!(c.queue_capacity, 10);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.initial_backoff, Duration::from_millis(10));
        assert_eq!(c.max_backoff, Duration::from_secs(1));
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let again: AlertSinksConfig =
            serde_yaml::from_str(&serde_yaml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        let e = parse("webhooks: [{url: 'http://x', retries: 3}]").unwrap_err();
        assert!(e.contains("unknown field `retries`"), "{e}");
        let e = parse("initial_backoff: soon").unwrap_err();
        assert!(e.contains("invalid duration `soon`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut headers = BTreeMap::new();
        headers.insert("Bad Header".to_string(), "x".to_string());
        headers.insert("X-Ok".to_string(), "line\nbreak".to_string());
        let c = AlertSinksConfig {
            alertmanager: Some(AlertmanagerConfig {
                url: "ftp://am".into(),
                timeout: Duration::ZERO,
            }),
            webhooks: vec![WebhookConfig {
                url: "not a url".into(),
                timeout: Duration::from_secs(1),
                headers,
            }],
            queue_capacity: 0,
            max_retries: 1000,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(1),
            generator_url: Some("/relative".into()),
            ui_url: Some("spanline".into()),
        };
        let p = problems(&c);
        let expect = [
            "alerting.sinks.alertmanager.url: `ftp://am` is not an http or https URL",
            "alerting.sinks.alertmanager.timeout: must be more than 0",
            "alerting.sinks.webhooks[0].url: `not a url` is not a valid URL",
            "alerting.sinks.webhooks[0].headers: `Bad Header` is not a valid header name",
            "alerting.sinks.webhooks[0].headers.X-Ok: is not a valid header value",
            "alerting.sinks.queue_capacity: must be between 1 and 1000000",
            "alerting.sinks.max_retries: must be at most 100",
            "alerting.sinks.max_backoff: must be at least initial_backoff (2s)",
            "alerting.sinks.generator_url: `/relative` is not a valid URL",
            "alerting.sinks.ui_url: `spanline` is not a valid URL",
        ];
        for e in expect {
            assert!(
                p.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {p:#?}"
            );
        }
        assert_eq!(p.len(), expect.len(), "{p:#?}");
    }

    #[test]
    fn no_destination_is_an_error() {
        let p = problems(&AlertSinksConfig::default());
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("alerting.sinks: has no destination"),
            "{p:?}"
        );
    }
}
