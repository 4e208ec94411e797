//! Small text helpers of the alert stage: `{{name}}` templates, label names, globs,
//! fingerprints and value formatting.

use std::fmt::Write as _;
use std::time::Duration;

/// A parsed `{{name}}` template: literal text with variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
}

/// Why a label or annotation template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` without a closing `}}}}` in `{0}`")]
    Unclosed(String),
    #[error("`{{{{{0}}}}}` is not a variable")]
    NotAVariable(String),
}

impl Template {
    /// Parses `text`; variables are `{{name}}` (spaces inside the braces allowed), names
    /// are letters, digits, `_` and `.`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let body = &rest[open + 2..];
            let Some(close) = body.find("}}") else {
                return Err(TemplateError::Unclosed(text.to_string()));
            };
            let name = body[..close].trim();
            if !is_var_name(name) {
                return Err(TemplateError::NotAVariable(body[..close].to_string()));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &body[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The variable names used, in order.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the variables in; an unknown variable renders as an empty string.
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(lookup(v).unwrap_or("")),
            }
        }
        out
    }
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Shell-style match where `*` stands for any run of characters (no other wildcards).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or("");
    for piece in pieces {
        match tail.find(piece) {
            Some(i) => tail = &tail[i + piece.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a: stable across runs and builds (unlike std's randomised hasher).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Fnv {
    /// Adds bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// Adds a string and a terminator, so that `("ab", "c")` and `("a", "bc")` differ.
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The fingerprint of an alert: FNV-1a of the rule name and the labels in name order.
pub fn fingerprint<'a>(rule: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = Fnv::default().str(rule);
    for (k, v) in labels {
        h = h.str(k).str(v);
    }
    h.finish()
}

/// 16 lowercase hex characters.
pub fn hex64(v: u64) -> String {
    format!("{v:016x}")
}

/// How a value of a field reads: durations for nanosecond fields, fixed decimals else.
pub fn format_value(v: f64, nanos: bool) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if nanos {
        return format_ns(v);
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let mut s = String::new();
    let digits = if v.abs() >= 100.0 { 1 } else { 4 };
    let _ = write!(s, "{v:.digits$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// A share between 0 and 1 as a percentage, to two decimals at most (`0.90462` →
/// `90.46%`, `0.2` → `20%`).
pub fn format_share(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let mut s = format!("{:.2}", v * 100.0);
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s.push('%');
    s
}

/// Nanoseconds as a duration, rounded to what matters (`1.25s` → `1s 250ms`).
pub fn format_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return ns.to_string();
    }
    let sign = if ns < 0.0 { "-" } else { "" };
    let abs = ns.abs().min(u64::MAX as f64) as u64;
    // keep three significant units: microseconds under 1ms, milliseconds under 1h
    let rounded = if abs < 1_000_000 {
        abs / 1_000 * 1_000
    } else if abs < 3_600_000_000_000 {
        abs / 1_000_000 * 1_000_000
    } else {
        abs / 1_000_000_000 * 1_000_000_000
    };
    let d = Duration::from_nanos(rounded);
    if d.is_zero() {
        return format!("{sign}{abs}ns");
    }
    format!("{sign}{}", humantime::format_duration(d))
}
