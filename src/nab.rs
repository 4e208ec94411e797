//! The Numenta Anomaly Benchmark (NAB) harness: runs the detect stage's series detector
//! over every CSV of the NAB corpus and writes NAB result files.
//!
//! Each file (`<data>/<category>/<file>.csv`, columns `timestamp,value`) is one plain
//! series scored with [`Detector::observe_value`] in stream order: no look-ahead, models
//! trained inline as soon as they are requested. The result file
//! `<out>/<NAME>/<category>/<NAME>_<file>.csv` has the columns
//! `timestamp,value,anomaly_score`.
//!
//! **What is reported.** NAB rewards the earliest detection in each labelled window and
//! charges every detection outside one, so it measures alerts rather than scores. The
//! harness reports what an alert on the detector's score would: a sample whose score
//! reaches the detector's `anomaly_threshold` starts an episode and is reported with its
//! score; later samples of the episode are reported as 0 (the alert is already firing);
//! the episode ends once the score stayed below the threshold for
//! [`EPISODE_QUIET`] samples. Outside episodes the score is reported as is. The
//! settings are [`settings`], the same for every file.
//!
//! # Reproducing the score
//!
//! (filled in below)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::Subject;
use crate::stage::detect::{DetectSettings, Detector, ModelKind};

/// Samples below the threshold that end an episode.
pub const EPISODE_QUIET: usize = 1;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NabSummary {
    /// Data files scored.
    pub files: usize,
    /// Rows scored.
    pub rows: usize,
    /// Episodes reported (onsets at or above the anomaly threshold).
    pub episodes: usize,
    /// The detector's result directory, `<out>/<NAME>`.
    pub results_dir: PathBuf,
}

/// The detector settings used for every NAB file.
pub fn settings() -> DetectSettings {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    if std::env::var_os("NAB_EXP").is_some() {
        let models = std::env::var("NAB_MODELS").unwrap_or_else(|_| "kmeans,gmm,knn".into());
        return DetectSettings {
            min_samples: env("NAB_MIN", 50),
            baseline_windows: env("NAB_BASE", 500),
            retrain_every: env("NAB_RETRAIN", 100),
            anomaly_threshold: std::env::var("NAB_THETA").ok().and_then(|v| v.parse().ok()).unwrap_or(0.9),
            adapt_after: env("NAB_ADAPT", 30),
            models: models.split(',').filter_map(|m| serde_json::from_str(&format!("\"{m}\"")).ok()).collect(),
            ..DetectSettings::default()
        };
    }
    DetectSettings {
        min_samples: 50,
        baseline_windows: 500,
        retrain_every: 100,
        anomaly_threshold: 0.9,
        adapt_after: 30,
        models: vec![ModelKind::Kmeans, ModelKind::Gmm, ModelKind::Knn],
        ..DetectSettings::default()
    }
}

/// Runs the detector over `data_dir` (category subfolders of CSV files) and writes NAB
/// result files under `out_dir/<detector>/`. The name must not contain `_` (NAB splits
/// file names on it) nor a path separator.
pub fn run(data_dir: &Path, out_dir: &Path, detector: &str) -> Result<NabSummary, String> {
    if detector.is_empty() || detector.contains(['_', '/', '\\']) || detector.starts_with('.') {
        return Err(format!("detector name {detector:?} must be non-empty, without '_', '/' or a leading '.'"));
    }
    let files = data_files(data_dir)?;
    if files.is_empty() {
        return Err(format!("no CSV files under {}: expected <category>/<file>.csv", data_dir.display()));
    }
    let results_dir = out_dir.join(detector);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len());
    let outcomes: Vec<Result<(usize, usize), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((category, path)) = files.get(i) else {
                            break;
                        };
                        done.push(score_file(path, &results_dir.join(category), detector));
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("a worker panicked".to_string())])).collect()
    });
    let mut summary = NabSummary { results_dir, ..NabSummary::default() };
    for o in outcomes {
        let (rows, episodes) = o?;
        summary.files += 1;
        summary.rows += rows;
        summary.episodes += episodes;
    }
    Ok(summary)
}

/// (category, path) of every `*.csv` in the category folders, sorted.
fn data_files(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let read = |p: &Path| std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut out = Vec::new();
    for entry in read(data_dir)? {
        let dir = entry.map_err(|e| e.to_string())?.path();
        if !dir.is_dir() {
            continue;
        }
        let category = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for f in read(&dir)? {
            let p = f.map_err(|e| e.to_string())?.path();
            if p.extension().is_some_and(|e| e == "csv") {
                out.push((category.clone(), p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scores one file; returns (rows, episodes).
fn score_file(path: &Path, out_dir: &Path, detector: &str) -> Result<(usize, usize), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let subject = Subject::Series {
        window_size_ns: 0,
        scope: Arc::from("nab"),
        key: vec![(Arc::from("file"), Arc::from(stem.as_str()))],
    };
    let settings = settings();
    let threshold = settings.anomaly_threshold;
    let mut det = Detector::new(settings);
    let mut episode = Episode::default();
    let mut out = String::from("timestamp,value,anomaly_score\n");
    let mut scores = Vec::with_capacity(1);
    let (mut rows, mut episodes) = (0, 0);
    let mut dump = std::env::var_os("NAB_DUMP").map(|_| String::from("timestamp,value,score,z\n"));
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| format!("{}:{}: expected timestamp,value", path.display(), n + 1))?;
        let at_ns = parse_timestamp(ts).ok_or_else(|| format!("{}:{}: bad timestamp {ts:?}", path.display(), n + 1))?;
        let v: f64 = value.trim().parse().unwrap_or(f64::NAN);
        scores.clear();
        det.observe_value(&subject, at_ns, v, &mut scores);
        det.train_inline();
        let score = scores.first().map_or(0.0, |s| s.score);
        if let Some(d) = &mut dump {
            let z = scores.first().and_then(|s| s.explanations.first()).map_or(0.0, |e| e.deviations);
            let _ = writeln!(d, "{ts},{},{score},{z}", value.trim());
        }
        let (reported, onset) = if std::env::var_os("NAB_RAW").is_some() { (score, false) } else { episode.report(score, threshold) };
        episodes += usize::from(onset);
        rows += 1;
        let _ = writeln!(out, "{ts},{},{reported}", value.trim());
    }
    if let (Some(d), Some(dir)) = (dump, std::env::var_os("NAB_DUMP")) {
        let cat = out_dir.file_name().unwrap_or_default();
        let dir = Path::new(&dir).join(cat);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{stem}.csv")), d);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let file = out_dir.join(format!("{detector}_{stem}.csv"));
    std::fs::write(&file, out).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((rows, episodes))
}

/// The alert-like reporting of scores (see the module docs).
#[derive(Debug, Default)]
struct Episode {
    active: bool,
    quiet: usize,
}

impl Episode {
    /// The reported score, and whether this sample starts an episode.
    fn report(&mut self, score: f64, threshold: f64) -> (f64, bool) {
        if !self.active {
            if score >= threshold {
                self.active = true;
                self.quiet = 0;
                return (score, true);
            }
            return (score, false);
        }
        if score >= threshold {
            self.quiet = 0;
        } else {
            self.quiet += 1;
            if self.quiet >= EPISODE_QUIET {
                self.active = false;
            }
        }
        (0.0, false)
    }
}

/// Unix nanoseconds of a NAB timestamp, `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(' ')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0 {
        return None;
    }
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3_600 + mm * 60 + ss) as i64) * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2014-07-01 00:30:00"), Some(1_404_174_600 * 1_000_000_000));
        assert_eq!(parse_timestamp("2000-02-29 23:59:59"), Some(951_868_799 * 1_000_000_000));
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("2014-07-01T00:00:00"), None);
    }

    #[test]
    fn episodes_report_onsets_once() {
        let mut e = Episode::default();
        let got: Vec<(f64, bool)> = [0.1, 0.95, 0.97, 0.2, 0.3, 0.99].iter().map(|s| e.report(*s, 0.9)).collect();
        assert_eq!(got[0], (0.1, false));
        assert_eq!(got[1], (0.95, true));
        assert_eq!(got[2], (0.0, false));
        assert_eq!(got[3], (0.0, false));
        assert_eq!(got[4], (0.3, false));
        assert_eq!(got[5], (0.99, true));
    }

    #[test]
    fn writes_result_files_named_as_nab_expects() {
        let data = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("realDemo")).unwrap();
        let mut csv = String::from("timestamp,value\n");
        for i in 0..400 {
            let v = if i == 300 { 500.0 } else { 10.0 + (i % 7) as f64 };
            let _ = writeln!(csv, "2015-01-01 {:02}:{:02}:00,{v}", (i / 60) % 24, i % 60);
        }
        std::fs::write(data.path().join("realDemo/demo_series.csv"), csv).unwrap();
        assert!(run(data.path(), out.path(), "bad_name").is_err());
        let summary = run(data.path(), out.path(), "spanline").unwrap();
        assert_eq!((summary.files, summary.rows), (1, 400));
        let text = std::fs::read_to_string(out.path().join("spanline/realDemo/spanline_demo_series.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let scores: Vec<f64> = lines.map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
        assert_eq!(scores.len(), 400);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let top = scores.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(top.0, 300, "the spike scores highest");
    }

    /// The whole corpus: `NAB_DATA=/path/to/nab/data NAB_OUT=/tmp/nab-results cargo test
    /// --release --lib nab::tests::corpus -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn corpus() {
        let data = std::env::var("NAB_DATA").unwrap_or_else(|_| "/work/shared/datasets/nab/data".to_string());
        let out = std::env::var("NAB_OUT").unwrap_or_else(|_| "/tmp/nab-results".to_string());
        let name = std::env::var("NAB_NAME").unwrap_or_else(|_| "spanline".to_string());
        let t = std::time::Instant::now();
        let summary = run(Path::new(&data), Path::new(&out), &name).unwrap();
        println!("{summary:?} in {:?}", t.elapsed());
    }
}

#[cfg(test)]
mod debug {
    use super::*;

    /// `NAB_FILE=realKnownCause/nyc_taxi.csv cargo test --release --lib nab::debug -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn one_file() {
        let f = std::env::var("NAB_FILE").unwrap_or_else(|_| "artificialNoAnomaly/art_daily_small_noise.csv".into());
        let thr: f64 = std::env::var("NAB_THR").ok().and_then(|v| v.parse().ok()).unwrap_or(0.9);
        let text = std::fs::read_to_string(format!("/work/shared/datasets/nab/data/{f}")).unwrap();
        let subject = Subject::Series { window_size_ns: 0, scope: Arc::from("nab"), key: vec![] };
        let mut det = Detector::new(settings());
        let mut scores = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let (ts, v) = line.split_once(',').unwrap();
            scores.clear();
            det.observe_value(&subject, parse_timestamp(ts).unwrap(), v.parse().unwrap(), &mut scores);
            det.train_inline();
            if let Some(s) = scores.first() {
                if s.score >= thr {
                    let e = &s.explanations[0];
                    println!("{i} {ts} v={v} score={:.6} {} base={:.3} z={:.2}", s.score, s.model, e.baseline, e.deviations);
                }
            }
        }
        println!("{:?}", det.stats());
    }
}
