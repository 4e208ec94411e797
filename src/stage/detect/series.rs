//! Scoring of series: the closed windows of the watched aggregate series, and the values
//! of plain single-valued series.

use crate::model::{AnomalyScore, Subject, WindowAggregate};

use super::core::Core;
use super::features;
use super::{tracked, Detector, SeriesKey, Target};

impl Detector {
    /// Scores a closed window of a watched series (scope in `series_scopes`, the watched
    /// window size) and learns from it; pushes one score, or none for unwatched windows.
    pub fn observe_window(&mut self, w: &WindowAggregate, out: &mut Vec<AnomalyScore>) {
        let s = &self.settings;
        if !s.series_scopes.is_empty() && !s.series_scopes.iter().any(|x| **x == *w.scope) {
            return;
        }
        match s.window_size_ns {
            Some(size) if size != w.window_size_ns => return,
            Some(_) => {}
            None => match self.smallest_window_ns {
                Some(min) if w.window_size_ns > min => return,
                Some(min) if w.window_size_ns == min => {}
                _ => {
                    self.smallest_window_ns = Some(w.window_size_ns);
                    let changed = &mut self.changed;
                    self.series.retain(|k, _| {
                        let keep = k.window_size_ns == w.window_size_ns;
                        if let (false, Some(c)) = (keep, changed.as_mut()) {
                            c.insert(Target::Series(k.clone()));
                        }
                        keep
                    });
                }
            },
        }
        let key = SeriesKey {
            window_size_ns: w.window_size_ns,
            scope: w.scope.clone(),
            key: w.key.clone(),
        };
        let raw = features::window_features(w);
        let outcome = match tracked(
            &mut self.series,
            &key,
            &self.settings,
            &mut self.stats,
            || Core::new(&features::window_specs(), false, &self.settings),
        ) {
            Some(core) => core.observe(w.window_end_ns, &raw, None, &self.settings),
            None => return,
        };
        let subject = Subject::Series {
            window_size_ns: key.window_size_ns,
            scope: key.scope.clone(),
            key: key.key.clone(),
        };
        self.finish(Target::Series(key), subject, w.window_end_ns, outcome, out);
    }

    /// Scores one value of a plain series (`subject` must be a [`Subject::Series`]; the
    /// scope filter does not apply) at event time `at_ns`, and learns from it.
    pub fn observe_value(
        &mut self,
        subject: &Subject,
        at_ns: i64,
        value: f64,
        out: &mut Vec<AnomalyScore>,
    ) {
        let Subject::Series {
            window_size_ns,
            scope,
            key,
        } = subject
        else {
            return;
        };
        let key = SeriesKey {
            window_size_ns: *window_size_ns,
            scope: scope.clone(),
            key: key.clone(),
        };
        let outcome = match tracked(
            &mut self.values,
            &key,
            &self.settings,
            &mut self.stats,
            || Core::new(&features::value_specs(), false, &self.settings),
        ) {
            Some(core) => core.observe(at_ns, &[value], None, &self.settings),
            None => return,
        };
        self.finish(Target::Value(key), subject.clone(), at_ns, outcome, out);
    }
}
