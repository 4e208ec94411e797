//! Calls into the open windows: every span of a closed trace, and its service-graph
//! edges, added to each open window holding its end, under the series of its key.

use std::ops::Range;

use smallvec::SmallVec;

use crate::model::{Edge, StatusCode, Trace};

use super::accum::{Accum, Call, Placement};
use super::dimension::Text;
use super::registry::{Registry, Values, OVERFLOW};
use super::{open_window, window_end, window_starts, AggregateStats, Aggregator, Scope};

/// Per call, the id of each value of its key (`None`: no live key has it).
type ValueIds = SmallVec<[Option<u32>; 8]>;

/// What became of a call.
enum Placed {
    Added,
    /// Missed at least one closed window.
    Late,
    OutOfRange,
}

impl Aggregator {
    /// Adds every span of a closed trace (or amendment) as a call, and `edges` (the
    /// trace's service-graph edges) when the service graph is on.
    pub fn add_trace(&mut self, trace: &Trace, edges: &[Edge]) {
        let mut texts: SmallVec<[Text<'_>; 8]> = SmallVec::new();
        let mut ids = ValueIds::new();
        for span in &trace.spans {
            self.stats.spans += 1;
            texts.clear();
            self.scratch.clear();
            if self.span_scopes > 0 {
                self.reader.read(span, &mut self.scratch, &mut texts);
            }
            let latency_ns = span.end_ns.saturating_sub(span.start_ns).max(0);
            let call = Call {
                latency_ns,
                error: span.status == StatusCode::Error,
                start_ns: span.end_ns.saturating_sub(latency_ns),
                end_ns: span.end_ns,
                server_latency_ns: None,
            };
            match self.add_call(&call, 0..self.span_scopes, &texts, &mut ids) {
                Placed::Added => {}
                Placed::Late => self.stats.late_spans += 1,
                Placed::OutOfRange => self.stats.out_of_range_calls += 1,
            }
        }
        if !self.settings.service_graph {
            return;
        }
        let graph = self.span_scopes..self.span_scopes + 1;
        for edge in edges {
            self.stats.edges += 1;
            let texts = [
                Text::Borrowed(&edge.client),
                Text::Borrowed(&edge.server),
                Text::Borrowed(edge.kind.as_str()),
            ];
            let server_ns = edge.server_latency_ns.max(0);
            let call = Call {
                latency_ns: edge.client_latency_ns.max(0),
                error: edge.error,
                start_ns: edge.end_ns.saturating_sub(server_ns),
                end_ns: edge.end_ns,
                server_latency_ns: Some(server_ns),
            };
            match self.add_call(&call, graph.clone(), &texts, &mut ids) {
                Placed::Added => {}
                Placed::Late => self.stats.late_edges += 1,
                Placed::OutOfRange => self.stats.out_of_range_calls += 1,
            }
        }
    }

    /// Adds one call to every open window holding its end, in every scope of `scopes`.
    fn add_call(
        &mut self,
        call: &Call,
        scopes: Range<usize>,
        texts: &[Text<'_>],
        ids: &mut ValueIds,
    ) -> Placed {
        if scopes.is_empty() {
            return Placed::Added;
        }
        ids.clear();
        ids.extend(
            texts
                .iter()
                .map(|t| self.values.lookup(t.get(&self.scratch))),
        );
        let t = call.end_ns;
        let (mut late, mut placed) = (false, false);
        let mut series: SmallVec<[u32; 8]> = SmallVec::new();
        let mut starts: SmallVec<[i64; 8]> = SmallVec::new();
        for size in &mut self.sizes {
            starts.clear();
            for start in window_starts(t, size.size_ns, size.hop_ns) {
                if window_end(start, size.size_ns) <= self.closed_through_ns {
                    late = true;
                } else {
                    starts.push(start);
                }
            }
            if starts.is_empty() {
                continue;
            }
            placed = true;
            series.clear();
            for s in scopes.clone() {
                let id = resolve(
                    &mut size.registries[s],
                    &mut self.values,
                    &self.scopes[s],
                    texts,
                    &self.scratch,
                    ids,
                    t,
                    &mut self.stats,
                );
                series.push(id);
            }
            for &start in &starts {
                let window =
                    open_window(&mut size.windows, start, self.scopes.len(), &mut self.stats);
                if let (Some(changes), false) = (&mut self.changes, window.dirty) {
                    window.dirty = true;
                    changes.push((size.size_ns, start));
                }
                let at = Placement::new(call, start, size.size_ns);
                for (s, &id) in scopes.clone().zip(&series) {
                    let ws = &mut window.scopes[s];
                    let i = *ws.index.entry(id).or_insert_with(|| {
                        ws.accums
                            .push((id, Accum::new(self.sketch_config, self.scopes[s].graph)));
                        (ws.accums.len() - 1) as u32
                    });
                    ws.accums[i as usize]
                        .1
                        .add(call, &at, self.settings.slo_latency_ns);
                }
            }
        }
        match (late, placed) {
            (true, _) => Placed::Late,
            (false, true) => Placed::Added,
            (false, false) => Placed::OutOfRange,
        }
    }
}

/// The series of a call's key in `registry`: a live key, a new one, or the overflow.
#[allow(clippy::too_many_arguments)]
#[inline]
fn resolve(
    registry: &mut Registry,
    values: &mut Values,
    scope: &Scope,
    texts: &[Text<'_>],
    scratch: &str,
    ids: &mut ValueIds,
    t_ns: i64,
    stats: &mut AggregateStats,
) -> u32 {
    let mut key: SmallVec<[u32; 8]> = SmallVec::new();
    let known = scope.values.iter().all(|&v| match ids[v] {
        Some(id) => {
            key.push(id);
            true
        }
        None => false,
    });
    if known {
        if let Some(id) = registry.find(&key, t_ns) {
            return id;
        }
    }
    if registry.is_full() {
        stats.overflowed_calls += 1;
        return OVERFLOW;
    }
    key.clear();
    for &v in &scope.values {
        let id = values.acquire(texts[v].get(scratch));
        ids[v] = Some(id);
        key.push(id);
    }
    stats.live_series += 1;
    registry.insert(&key, t_ns)
}
