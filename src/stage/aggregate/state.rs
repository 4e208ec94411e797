//! The aggregator's state as a changelog keeps it: which open windows changed since the
//! changes were last taken, a plain copy of each, and their restoration.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::accum::{Accum, AccumState};
use super::registry::OVERFLOW;
use super::{open_window, Aggregator};

/// One series of one open window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesState {
    /// The values of the scope's dimensions, in order; `None` for the overflow series.
    pub key: Option<Vec<String>>,
    pub accum: AccumState,
}

/// An open window of one size, every scope's series in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowState {
    pub size_ns: i64,
    pub start_ns: i64,
    /// Scope name and its series.
    pub scopes: Vec<(String, Vec<SeriesState>)>,
}

impl Aggregator {
    /// Keeps track of changed windows for a changelog from now on.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// Moves the (size, start) of every window changed or closed since the last call
    /// to `out`, each once; read them with [`Aggregator::window_state`] (`None`: the
    /// window closed, delete its record).
    pub fn take_changes(&mut self, out: &mut Vec<(i64, i64)>) {
        let Some(changes) = &mut self.changes else {
            return;
        };
        let first = out.len();
        out.append(changes);
        out[first..].sort_unstable();
        let mut seen = first;
        for i in first..out.len() {
            if i == first || out[i] != out[seen - 1] {
                out[seen] = out[i];
                seen += 1;
            }
        }
        out.truncate(seen);
        for &(size_ns, start_ns) in &out[first..] {
            if let Some(w) = self
                .sizes
                .iter_mut()
                .find(|s| s.size_ns == size_ns)
                .and_then(|s| s.windows.iter_mut().find(|w| w.start_ns == start_ns))
            {
                w.dirty = false;
            }
        }
    }

    /// A copy of the open window of `size_ns` starting at `start_ns`, if open.
    pub fn window_state(&self, size_ns: i64, start_ns: i64) -> Option<WindowState> {
        let size = self.sizes.iter().find(|s| s.size_ns == size_ns)?;
        let window = size.windows.iter().find(|w| w.start_ns == start_ns)?;
        let scopes = window
            .scopes
            .iter()
            .enumerate()
            .map(|(s, ws)| {
                let registry = &size.registries[s];
                let series = ws
                    .accums
                    .iter()
                    .map(|(id, acc)| SeriesState {
                        key: (*id != OVERFLOW).then(|| {
                            registry
                                .key(*id)
                                .iter()
                                .map(|&v| self.values.get(v).to_string())
                                .collect()
                        }),
                        accum: acc.to_state(),
                    })
                    .collect();
                (self.scopes[s].name.to_string(), series)
            })
            .collect();
        Some(WindowState {
            size_ns,
            start_ns,
            scopes,
        })
    }

    /// Restores an open window from its changelog record; returns the series that could
    /// not be placed (a window size or scope the pipeline no longer has, a window
    /// already closed, or a profile of another length).
    pub fn restore_window(&mut self, window: WindowState) -> usize {
        let Some(si) = self.sizes.iter().position(|s| s.size_ns == window.size_ns) else {
            return window.scopes.iter().map(|(_, s)| s.len()).sum();
        };
        if super::window_end(window.start_ns, window.size_ns) <= self.closed_through_ns {
            return window.scopes.iter().map(|(_, s)| s.len()).sum();
        }
        self.place_window(si, window, false)
    }

    /// Adds a partial window (the same window counted by another instance, see
    /// [`Aggregator::take_partials`]) to this one, series by series; returns the series
    /// that could not be placed. A partial of a window already emitted is late: its
    /// series are counted in `late_partials` and dropped.
    pub fn merge_window(&mut self, window: WindowState) -> usize {
        let series: usize = window.scopes.iter().map(|(_, s)| s.len()).sum();
        let Some(si) = self.sizes.iter().position(|s| s.size_ns == window.size_ns) else {
            return series;
        };
        if super::window_end(window.start_ns, window.size_ns) <= self.closed_through_ns {
            self.stats.late_partials += series as u64;
            return series;
        }
        self.place_window(si, window, true)
    }

    /// Every open window as a partial, in (size, start) order, and no window open
    /// afterwards: what this instance counted since the last call, for the owner of the
    /// windows to merge. Keys idle for `idle_series_expiry` before `now_ns` (event
    /// time) are forgotten, as closing windows forgets them.
    pub fn take_partials(&mut self, now_ns: i64) -> Vec<WindowState> {
        let mut out = Vec::new();
        for si in 0..self.sizes.len() {
            let size_ns = self.sizes[si].size_ns;
            let starts: Vec<i64> = self.sizes[si].windows.iter().map(|w| w.start_ns).collect();
            for start_ns in starts {
                out.extend(self.window_state(size_ns, start_ns));
            }
            self.stats.open_windows -= self.sizes[si].windows.len();
            self.sizes[si].windows.clear();
            for registry in &mut self.sizes[si].registries {
                let expired = registry.expire(now_ns, &mut self.values);
                self.stats.expired_series += expired;
                self.stats.live_series -= expired as usize;
            }
        }
        out
    }

    /// Puts the series of `window` (of size index `si`) in place, replacing what a
    /// series had (restore) or adding to it (`merge`).
    fn place_window(&mut self, si: usize, window: WindowState, merge: bool) -> usize {
        let scopes = self.scopes.len();
        let mut dropped = 0;
        let t_ns = super::window_end(window.start_ns, window.size_ns);
        for (name, series) in window.scopes {
            let Some(s) = self.scopes.iter().position(|sc| *sc.name == *name) else {
                dropped += series.len();
                continue;
            };
            for one in series {
                let Some(accum) = Accum::from_state(one.accum) else {
                    dropped += 1;
                    continue;
                };
                let id = match one.key {
                    Some(values) if values.len() == self.scopes[s].values.len() => {
                        self.restore_series(si, s, &values, t_ns)
                    }
                    Some(_) => {
                        dropped += 1;
                        continue;
                    }
                    None => OVERFLOW,
                };
                let size = &mut self.sizes[si];
                let w = open_window(&mut size.windows, window.start_ns, scopes, &mut self.stats);
                if let (true, Some(changes), false) = (merge, &mut self.changes, w.dirty) {
                    w.dirty = true;
                    changes.push((window.size_ns, window.start_ns));
                }
                let ws = &mut w.scopes[s];
                match ws.index.get(&id) {
                    Some(&i) if merge => ws.accums[i as usize].1.merge(&accum),
                    Some(&i) => ws.accums[i as usize].1 = accum,
                    None => {
                        ws.index.insert(id, ws.accums.len() as u32);
                        ws.accums.push((id, accum));
                    }
                }
            }
        }
        dropped
    }

    /// Restores how far windows have been emitted.
    pub fn restore_closed_through(&mut self, ns: i64) {
        self.closed_through_ns = self.closed_through_ns.max(ns);
    }

    /// The series id of `values` in scope `s` of size `si`, registered if new.
    fn restore_series(&mut self, si: usize, s: usize, values: &[String], t_ns: i64) -> u32 {
        let registry = &mut self.sizes[si].registries[s];
        let known: Option<SmallVec<[u32; 8]>> =
            values.iter().map(|v| self.values.lookup(v)).collect();
        if let Some(ids) = &known {
            if let Some(id) = registry.find(ids, t_ns) {
                return id;
            }
        }
        if registry.is_full() {
            return OVERFLOW;
        }
        let ids: SmallVec<[u32; 8]> = values.iter().map(|v| self.values.acquire(v)).collect();
        self.stats.live_series += 1;
        registry.insert(&ids, t_ns)
    }
}
