//! Closing windows: the aggregates of every window the watermark has passed, emitted in
//! order, and the keys idle since forgotten.

use super::registry::OVERFLOW;
use super::{window_end, Aggregator, WindowAggregate};

impl Aggregator {
    /// Closes every window ending at or before `watermark_ns` (the watermark never goes
    /// back: a smaller value closes nothing new), appending their aggregates to `out` in
    /// (window end, window size, scope, key) order, then forgets idle keys.
    pub fn advance(&mut self, watermark_ns: i64, out: &mut Vec<WindowAggregate>) {
        self.closed_through_ns = self.closed_through_ns.max(watermark_ns);
        let first = out.len();
        let slo = self.settings.slo_latency_ns;
        for size in &mut self.sizes {
            while size
                .windows
                .front()
                .is_some_and(|w| window_end(w.start_ns, size.size_ns) <= self.closed_through_ns)
            {
                let Some(window) = size.windows.pop_front() else {
                    break;
                };
                if let Some(changes) = &mut self.changes {
                    changes.push((size.size_ns, window.start_ns));
                }
                self.stats.open_windows -= 1;
                for (s, ws) in window.scopes.into_iter().enumerate() {
                    let scope = &self.scopes[s];
                    let registry = &size.registries[s];
                    for (id, acc) in ws.accums {
                        let key = if id == OVERFLOW {
                            scope.overflow_key.clone()
                        } else {
                            let values =
                                registry.key(id).iter().map(|&v| self.values.get(v).clone());
                            scope.dim_names.iter().cloned().zip(values).collect()
                        };
                        out.push(acc.finish(
                            window.start_ns,
                            size.size_ns,
                            scope.name.clone(),
                            key,
                            slo,
                        ));
                    }
                }
            }
        }
        out[first..].sort_unstable_by(WindowAggregate::emit_order);
        self.stats.aggregates_emitted += (out.len() - first) as u64;
        for size in &mut self.sizes {
            for registry in &mut size.registries {
                let expired = registry.expire(self.closed_through_ns, &mut self.values);
                self.stats.expired_series += expired;
                self.stats.live_series -= expired as usize;
            }
        }
    }

    /// Closes every open window (end of input): as [`Aggregator::advance`] to the end of
    /// the last open window, so calls for the windows emitted are late afterwards.
    pub fn flush(&mut self, out: &mut Vec<WindowAggregate>) {
        let last_end = self
            .sizes
            .iter()
            .filter_map(|s| s.windows.back().map(|w| window_end(w.start_ns, s.size_ns)))
            .max();
        if let Some(end) = last_end {
            self.advance(end, out);
        }
    }
}
