//! `spanline compare`: baseline time range against current time range per service and
//! operation, read from the pipeline's trace repository (opened read-only).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use spanline::repository::Repository;
use spanline::serve::api::own_params::time;
use spanline::serve::api::params::go_duration;
use spanline::serve::compare::{self, Change, SeriesComparison, SeriesSelection};

use crate::CliError;

/// The arguments of `spanline compare`.
#[derive(Args)]
pub struct CompareArgs {
    /// The pipeline file whose repository to read (its `repository:` section).
    pub pipeline: PathBuf,
    /// The baseline range START..END: RFC 3339 (UTC), unix milliseconds, or relative
    /// to now (`-2h..-1h`).
    #[arg(long, allow_hyphen_values = true)]
    pub baseline: String,
    /// The current range START..END (same forms).
    #[arg(long, allow_hyphen_values = true)]
    pub current: String,
    /// Only series of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only series of this operation (the `operation` dimension set).
    #[arg(long)]
    pub operation: Option<String>,
    /// Dimension sets to compare (default: service and operation, or operation when
    /// --operation is given).
    #[arg(long)]
    pub scope: Vec<String>,
    /// Window size to read, e.g. 10s (default: per series the smallest stored).
    #[arg(long)]
    pub window: Option<String>,
    /// `table` (one line per series and figure) or `json` (as the API's `compare`).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// `START..END` as unix millis.
fn range(arg: &'static str, text: &str, now_ms: i64) -> Result<(i64, i64), CliError> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("--{arg}: `{text}` is not START..END"))?;
    let start = time(a, now_ms).map_err(|e| format!("--{arg}: {e}"))?;
    let end = time(b, now_ms).map_err(|e| format!("--{arg}: {e}"))?;
    if start >= end {
        return Err(format!("--{arg}: the start must be before the end").into());
    }
    Ok((
        start.saturating_mul(1_000_000),
        end.saturating_mul(1_000_000),
    ))
}

/// Runs the command and prints the comparison.
pub fn run(args: CompareArgs) -> Result<(), CliError> {
    let config = crate::load(&args.pipeline)?;
    let path = config.repository.path_for(&config.name);
    if !path.exists() {
        return Err(format!(
            "no trace repository at {} (check repository.path and the working directory)",
            path.display()
        )
        .into());
    }
    let now = spanline::runner::wall_ms();
    let baseline = range("baseline", &args.baseline, now)?;
    let current = range("current", &args.current, now)?;
    let window_size_ns = args
        .window
        .as_deref()
        .map(|w| match go_duration(w) {
            Ok(ns) if ns > 0 => Ok(ns),
            _ => Err(format!(
                "--window: `{w}` is not a positive duration such as 10s"
            )),
        })
        .transpose()?;
    let selection = SeriesSelection {
        scopes: args.scope,
        service: args.service,
        operation: args.operation,
        window_size_ns,
    };
    let repo = Repository::open_read_only(&path)?;
    let out = compare::compare(&repo, &selection, baseline, current)?;
    let text = match args.format {
        OutputFormat::Json => serde_json::to_string_pretty(&out)? + "\n",
        OutputFormat::Table => table(&out),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // a reader that stopped early (`| head`) is not an error
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

fn p_value(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// One line per series and figure.
pub fn table(rows: &[SeriesComparison]) -> String {
    let mut s = format!(
        "{:<40} {:<11} {:>12} {:>12} {:>12} {:>9} {:>9}  {}\n",
        "SERIES", "FIGURE", "BASELINE", "CURRENT", "CHANGE", "RELATIVE", "P-VALUE", "SIGNIFICANT"
    );
    if rows.is_empty() {
        s.push_str("(no stored windows in either range)\n");
    }
    for r in rows {
        let key: Vec<String> = r.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let series = format!("{} {} ({}s)", r.scope, key.join(","), r.window_seconds);
        let figures: [(&str, &Change); 5] = [
            ("p50_ms", &r.p50_ms),
            ("p95_ms", &r.p95_ms),
            ("p99_ms", &r.p99_ms),
            ("error_rate", &r.error_rate),
            ("throughput", &r.throughput),
        ];
        for (name, c) in figures {
            let _ = writeln!(
                s,
                "{:<40} {:<11} {:>12} {:>12} {:>12} {:>9} {:>9}  {}",
                series,
                name,
                num(c.baseline),
                num(c.current),
                c.change.map_or("-".into(), |v| format!("{v:+.4}")),
                c.relative_change
                    .map_or("-".into(), |v| format!("{:+.1}%", v * 100.0)),
                c.p_value.map_or("-".into(), p_value),
                if c.significant { "yes" } else { "no" },
            );
        }
    }
    s
}
