//! Injected faults: how they are written (`latency:llm-openai*8@60s+30s`) and when they
//! apply in event time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::topology::{services, Svc};

/// What an injected fault does to its service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// The service's SERVER and CONSUMER spans take `factor` times longer (its own
    /// processing is stretched, so every ancestor grows too).
    LatencySpike { factor: f64 },
    /// The service's SERVER and CONSUMER spans fail with probability `error_rate`; their
    /// caller CLIENT spans carry the error, and idempotent calls are retried once.
    ErrorBurst { error_rate: f64 },
    /// Every call to the service fails fast: a short CLIENT span with status ERROR and no
    /// span from the dead service. Queued messages wait until the outage ends.
    Outage,
}

/// Factor of `latency:` faults written without `*factor`.
pub const DEFAULT_LATENCY_FACTOR: f64 = 10.0;
/// Error rate of `errors:` faults written without `*rate`.
pub const DEFAULT_ERROR_RATE: f64 = 0.9;

/// One fault injected into one service for a window of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// The affected service, one of [`services()`].
    pub service: String,
    /// Start of the window, as an offset from the workload's `start_ns`.
    pub start: Duration,
    /// Length of the window.
    pub duration: Duration,
}

/// Why a fault string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FaultParseError {
    #[error("fault `{fault}`: expected `kind:service[*param]@start+duration`, e.g. `latency:llm-openai*8@60s+30s`")]
    Shape { fault: String },
    #[error("fault `{fault}`: unknown kind `{kind}` (expected latency, errors or outage)")]
    UnknownKind { fault: String, kind: String },
    #[error("fault `{fault}`: unknown service `{service}` (known: {known})")]
    UnknownService {
        fault: String,
        service: String,
        known: String,
    },
    #[error("fault `{fault}`: bad {what} `{value}`: {reason}")]
    BadValue {
        fault: String,
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("fault list has an empty entry at position {position}")]
    EmptyEntry { position: usize },
}

impl Fault {
    /// The fault's window in unix nanos, for a workload starting at `start_ns`.
    pub fn window_ns(&self, start_ns: i64) -> (i64, i64) {
        let from = start_ns.saturating_add(duration_ns(self.start));
        (from, from.saturating_add(duration_ns(self.duration)))
    }

    /// Checks what `FromStr` checks, for faults built in code.
    pub fn validate(&self) -> Result<(), FaultParseError> {
        let text = self.to_string();
        if Svc::from_name(&self.service).is_none() {
            return Err(unknown_service(&text, &self.service));
        }
        match self.kind {
            FaultKind::LatencySpike { factor } => check_factor(&text, factor, &factor.to_string())?,
            FaultKind::ErrorBurst { error_rate } => {
                check_rate(&text, error_rate, &error_rate.to_string())?
            }
            FaultKind::Outage => {}
        }
        if self.duration.is_zero() {
            return Err(bad(&text, "duration", "0s", "must be positive"));
        }
        Ok(())
    }
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn bad(fault: &str, what: &'static str, value: &str, reason: impl Into<String>) -> FaultParseError {
    FaultParseError::BadValue {
        fault: fault.into(),
        what,
        value: value.into(),
        reason: reason.into(),
    }
}

fn unknown_service(fault: &str, service: &str) -> FaultParseError {
    FaultParseError::UnknownService {
        fault: fault.into(),
        service: service.into(),
        known: services().join(", "),
    }
}

fn check_factor(fault: &str, factor: f64, text: &str) -> Result<(), FaultParseError> {
    if factor.is_finite() && factor > 0.0 {
        Ok(())
    } else {
        Err(bad(
            fault,
            "latency factor",
            text,
            "must be a positive number",
        ))
    }
}

fn check_rate(fault: &str, rate: f64, text: &str) -> Result<(), FaultParseError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(bad(fault, "error rate", text, "must be between 0 and 1"))
    }
}

fn parse_duration(
    fault: &str,
    what: &'static str,
    text: &str,
) -> Result<Duration, FaultParseError> {
    humantime::parse_duration(text)
        .map_err(|e| bad(fault, what, text, e.to_string().to_lowercase()))
}

impl FromStr for Fault {
    type Err = FaultParseError;

    /// `latency:SERVICE[*FACTOR]@START+DURATION`, `errors:SERVICE[*RATE]@START+DURATION`,
    /// `outage:SERVICE@START+DURATION`; times as humantime durations (`90s`, `1m30s`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fault = s.trim();
        let shape = || FaultParseError::Shape {
            fault: fault.into(),
        };
        let (kind, rest) = fault.split_once(':').ok_or_else(shape)?;
        let (target, window) = rest.split_once('@').ok_or_else(shape)?;
        let (start, duration) = window.split_once('+').ok_or_else(shape)?;
        let (service, param) = match target.split_once('*') {
            Some((service, param)) => (service.trim(), Some(param.trim())),
            None => (target.trim(), None),
        };
        let kind = match kind.trim() {
            "latency" => {
                let factor = match param {
                    None => DEFAULT_LATENCY_FACTOR,
                    Some(p) => {
                        let f = p
                            .parse::<f64>()
                            .map_err(|_| bad(fault, "latency factor", p, "not a number"))?;
                        check_factor(fault, f, p)?;
                        f
                    }
                };
                FaultKind::LatencySpike { factor }
            }
            "errors" => {
                let error_rate = match param {
                    None => DEFAULT_ERROR_RATE,
                    Some(p) => {
                        let r = p
                            .parse::<f64>()
                            .map_err(|_| bad(fault, "error rate", p, "not a number"))?;
                        check_rate(fault, r, p)?;
                        r
                    }
                };
                FaultKind::ErrorBurst { error_rate }
            }
            "outage" => {
                if let Some(p) = param {
                    return Err(bad(
                        fault,
                        "parameter",
                        p,
                        "an outage takes no `*` parameter",
                    ));
                }
                FaultKind::Outage
            }
            other => {
                return Err(FaultParseError::UnknownKind {
                    fault: fault.into(),
                    kind: other.into(),
                })
            }
        };
        if Svc::from_name(service).is_none() {
            return Err(unknown_service(fault, service));
        }
        let start = parse_duration(fault, "start", start.trim())?;
        let duration = parse_duration(fault, "duration", duration.trim())?;
        if duration.is_zero() {
            return Err(bad(
                fault,
                "duration",
                duration_text(duration).as_str(),
                "must be positive",
            ));
        }
        Ok(Fault {
            kind,
            service: service.into(),
            start,
            duration,
        })
    }
}

fn duration_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The string form `FromStr` reads back.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::LatencySpike { factor } => write!(f, "latency:{}*{factor}", self.service)?,
            FaultKind::ErrorBurst { error_rate } => {
                write!(f, "errors:{}*{error_rate}", self.service)?
            }
            FaultKind::Outage => write!(f, "outage:{}", self.service)?,
        }
        write!(
            f,
            "@{}+{}",
            duration_text(self.start),
            duration_text(self.duration)
        )
    }
}

/// Parses a comma-separated list of faults; an empty or blank string is no faults.
pub fn parse_faults(s: &str) -> Result<Vec<Fault>, FaultParseError> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .enumerate()
        .map(|(i, part)| {
            if part.trim().is_empty() {
                Err(FaultParseError::EmptyEntry { position: i + 1 })
            } else {
                part.parse()
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Window {
    from: i64,
    to: i64,
    kind: FaultKind,
}

/// The faults of a workload in event time, per service, for fast lookups while
/// generating. Faults naming an unknown service are ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultTimeline {
    per_service: [Vec<Window>; 12],
}

impl FaultTimeline {
    pub(crate) fn new(faults: &[Fault], start_ns: i64) -> Self {
        let mut t = Self::default();
        for fault in faults {
            if let Some(svc) = Svc::from_name(&fault.service) {
                let (from, to) = fault.window_ns(start_ns);
                t.per_service[svc as usize].push(Window {
                    from,
                    to,
                    kind: fault.kind,
                });
            }
        }
        t
    }

    #[inline]
    fn active(&self, svc: Svc, t: i64) -> impl Iterator<Item = &Window> {
        self.per_service[svc as usize]
            .iter()
            .filter(move |w| w.from <= t && t < w.to)
    }

    /// How many times longer the service's spans starting at `t` take.
    #[inline]
    pub(crate) fn latency_factor(&self, svc: Svc, t: i64) -> f64 {
        self.active(svc, t)
            .map(|w| match w.kind {
                FaultKind::LatencySpike { factor } => factor,
                _ => 1.0,
            })
            .product()
    }

    /// The injected failure probability of the service's spans starting at `t`.
    #[inline]
    pub(crate) fn error_rate(&self, svc: Svc, t: i64) -> f64 {
        self.active(svc, t)
            .map(|w| match w.kind {
                FaultKind::ErrorBurst { error_rate } => error_rate,
                _ => 0.0,
            })
            .fold(0.0, f64::max)
    }

    /// When the outage of `svc` that covers `t` ends, if one does.
    #[inline]
    pub(crate) fn outage_end(&self, svc: Svc, t: i64) -> Option<i64> {
        self.active(svc, t)
            .filter(|w| matches!(w.kind, FaultKind::Outage))
            .map(|w| w.to)
            .max()
    }

    /// True when `svc` is down at `t`.
    #[inline]
    pub(crate) fn is_down(&self, svc: Svc, t: i64) -> bool {
        self.outage_end(svc, t).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_every_kind_with_and_without_parameters() {
        let f: Fault = "latency:llm-openai@60s+30s".parse().unwrap();
        assert_eq!(
            f.kind,
            FaultKind::LatencySpike {
                factor: DEFAULT_LATENCY_FACTOR
            }
        );
        assert_eq!(
            (f.service.as_str(), f.start, f.duration),
            ("llm-openai", secs(60), secs(30))
        );
        let f: Fault = "latency:llm-openai*8@1m+30s".parse().unwrap();
        assert_eq!(f.kind, FaultKind::LatencySpike { factor: 8.0 });
        assert_eq!(f.start, secs(60));
        let f: Fault = "errors:vector-store@120s+20s".parse().unwrap();
        assert_eq!(
            f.kind,
            FaultKind::ErrorBurst {
                error_rate: DEFAULT_ERROR_RATE
            }
        );
        let f: Fault = "errors:vector-store*0.5@120s+20s".parse().unwrap();
        assert_eq!(f.kind, FaultKind::ErrorBurst { error_rate: 0.5 });
        let f: Fault = " outage:search-agent@200s+30s ".parse().unwrap();
        assert_eq!(f.kind, FaultKind::Outage);
        assert_eq!(f.to_string().parse::<Fault>().unwrap(), f);
        let all =
            parse_faults("latency:llm-openai*8@60s+30s, errors:vector-store@120s+20s,outage:search-agent@200s+30s")
                .unwrap();
        assert_eq!(all.len(), 3);
        assert!(parse_faults("  ").unwrap().is_empty());
        assert!(all.iter().all(|f| f.validate().is_ok()));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<Fault>().unwrap_err().to_string();
        assert!(
            err("latency:llm-openai").contains("expected `kind:service"),
            "{}",
            err("latency:llm-openai")
        );
        assert!(err("slow:llm-openai@1s+1s").contains("unknown kind `slow`"));
        assert!(err("latency:llm-foo@1s+1s").contains("unknown service `llm-foo`"));
        assert!(err("latency:llm-foo@1s+1s").contains("llm-openai"));
        assert!(err("latency:llm-openai*fast@1s+1s").contains("bad latency factor `fast`"));
        assert!(err("latency:llm-openai*-2@1s+1s").contains("must be a positive number"));
        assert!(err("errors:redis*1.5@1s+1s").contains("bad error rate `1.5`"));
        assert!(err("outage:redis*2@1s+1s").contains("bad parameter `2`"));
        assert!(err("outage:redis@soon+1s").contains("bad start `soon`"));
        assert!(err("outage:redis@1s+ever").contains("bad duration `ever`"));
        assert!(err("outage:redis@1s+0s").contains("must be positive"));
        let list = parse_faults("outage:redis@1s+1s,,latency:redis@1s+1s").unwrap_err();
        assert_eq!(list, FaultParseError::EmptyEntry { position: 2 });
        let msg = parse_faults("outage:redis@1s+1s,outage:nope@1s+1s")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("fault `outage:nope@1s+1s`"), "{msg}");
    }

    #[test]
    fn timeline_applies_only_inside_windows() {
        let faults =
            parse_faults("latency:redis*4@10s+10s,errors:redis*0.5@15s+10s,outage:postgres@0s+1s")
                .unwrap();
        let t = FaultTimeline::new(&faults, 1_000);
        let at = |s: f64| 1_000 + (s * 1e9) as i64;
        assert_eq!(t.latency_factor(Svc::Redis, at(9.9)), 1.0);
        assert_eq!(t.latency_factor(Svc::Redis, at(10.0)), 4.0);
        assert_eq!(t.latency_factor(Svc::Redis, at(20.0)), 1.0);
        assert_eq!(t.error_rate(Svc::Redis, at(12.0)), 0.0);
        assert_eq!(t.error_rate(Svc::Redis, at(16.0)), 0.5);
        assert_eq!(t.latency_factor(Svc::Postgres, at(16.0)), 1.0);
        assert!(t.is_down(Svc::Postgres, at(0.5)));
        assert_eq!(t.outage_end(Svc::Postgres, at(0.5)), Some(at(1.0)));
        assert!(!t.is_down(Svc::Postgres, at(1.0)));
    }
}
