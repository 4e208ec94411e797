//! The span tree of a trace, repaired: orphans, cycles and extra roots hang under a
//! synthetic root, negative durations become 0, and the oddities are counted.

use rustc_hash::FxHashMap;

use super::{Oddities, CLOCK_SKEW_TOLERANCE_NS};
use crate::model::{Span, SpanKind};

/// No node.
pub(super) const NONE: usize = usize::MAX;

/// Nodes are the spans by index, then the synthetic root (index `spans.len()`) when
/// there is one.
pub(super) struct Tree<'a> {
    pub spans: &'a [Span],
    pub start: Vec<i64>,
    /// The end, never before the start.
    pub end: Vec<i64>,
    /// `NONE` for the top node only.
    pub parent: Vec<usize>,
    child_off: Vec<usize>,
    /// Children of each node, by start, end, span id.
    child: Vec<usize>,
    /// Every node, parents before children (depth first, children by start).
    pub order: Vec<usize>,
    /// Real spans from 1 at the root; the synthetic root is 0.
    pub depth: Vec<u32>,
    /// The node the critical path starts from: the synthetic root or the one root.
    pub top: usize,
    /// The first root span in span order, if any.
    pub primary_root: Option<usize>,
    pub min_start: i64,
    pub max_end: i64,
    pub oddities: Oddities,
}

impl<'a> Tree<'a> {
    pub(super) fn build(spans: &'a [Span]) -> Self {
        let n = spans.len();
        let mut odd = Oddities::default();
        let mut start = Vec::with_capacity(n + 1);
        let mut end = Vec::with_capacity(n + 1);
        for s in spans {
            start.push(s.start_ns);
            if s.end_ns < s.start_ns {
                odd.negative_durations += 1;
                end.push(s.start_ns);
            } else {
                odd.zero_durations += u32::from(s.end_ns == s.start_ns);
                end.push(s.end_ns);
            }
        }
        let min_start = start.iter().copied().min().unwrap_or(0);
        let max_end = end.iter().copied().max().unwrap_or(0);

        // duplicate span ids: the first one is the parent of their children
        let mut ids: FxHashMap<u64, usize> = FxHashMap::default();
        ids.reserve(n);
        for (i, s) in spans.iter().enumerate() {
            ids.entry(s.span_id).or_insert(i);
        }
        let mut parent = Vec::with_capacity(n + 1);
        let mut roots = Vec::new();
        // nodes to hang under the synthetic root besides the roots
        let mut detached = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            if s.parent_span_id == 0 {
                roots.push(i);
                parent.push(NONE);
            } else if let Some(&p) = ids.get(&s.parent_span_id) {
                parent.push(p);
            } else {
                odd.orphans += 1;
                detached.push(i);
                parent.push(NONE);
            }
        }
        odd.cycles = break_cycles(&mut parent, &start, &mut detached);

        // as `Trace::root`: the first in span order (the earliest in a closed trace)
        let primary_root = roots.first().copied();
        odd.extra_roots = saturating_u32(roots.len().saturating_sub(1));
        odd.synthetic_root = roots.len() != 1 || !detached.is_empty();
        let top = if odd.synthetic_root {
            for &r in roots.iter().chain(&detached) {
                parent[r] = n;
            }
            start.push(min_start);
            end.push(max_end);
            parent.push(NONE);
            n
        } else {
            roots[0]
        };

        let (child_off, child) = children(&parent, spans, &start, &end);
        let mut tree = Tree {
            spans,
            start,
            end,
            parent,
            child_off,
            child,
            order: Vec::new(),
            depth: Vec::new(),
            top,
            primary_root,
            min_start,
            max_end,
            oddities: odd,
        };
        tree.walk();
        tree.oddities.clock_skew = tree.clock_skew();
        tree
    }

    /// Number of nodes (spans plus the synthetic root).
    pub(super) fn nodes(&self) -> usize {
        self.parent.len()
    }

    /// The span of a node; `None` for the synthetic root.
    pub(super) fn span(&self, node: usize) -> Option<&'a Span> {
        self.spans.get(node)
    }

    /// The parent when it is a real span.
    pub(super) fn real_parent(&self, node: usize) -> Option<usize> {
        let p = self.parent[node];
        (p < self.spans.len()).then_some(p)
    }

    /// Children by start time.
    pub(super) fn children(&self, node: usize) -> &[usize] {
        &self.child[self.child_off[node]..self.child_off[node + 1]]
    }

    /// Duration of a node (never negative).
    pub(super) fn len_ns(&self, node: usize) -> i64 {
        self.end[node].saturating_sub(self.start[node])
    }

    /// Latest end minus earliest start.
    pub(super) fn duration_ns(&self) -> i64 {
        self.max_end.saturating_sub(self.min_start)
    }

    /// Spans on the longest root-to-leaf chain.
    pub(super) fn max_depth(&self) -> usize {
        self.depth.iter().copied().max().unwrap_or(0) as usize
    }

    /// Fills `order` and `depth` from the top with an explicit stack.
    fn walk(&mut self) {
        let nodes = self.nodes();
        self.order = Vec::with_capacity(nodes);
        self.depth = vec![0; nodes];
        self.depth[self.top] = u32::from(self.top < self.spans.len());
        let mut stack = vec![self.top];
        while let Some(v) = stack.pop() {
            self.order.push(v);
            let d = self.depth[v].saturating_add(1);
            let (from, to) = (self.child_off[v], self.child_off[v + 1]);
            for &c in self.child[from..to].iter().rev() {
                self.depth[c] = d;
                stack.push(c);
            }
        }
        debug_assert_eq!(self.order.len(), nodes, "every node hangs under the top");
    }

    fn clock_skew(&self) -> u32 {
        let mut skewed = 0u32;
        for (c, s) in self.spans.iter().enumerate() {
            let Some(p) = self.real_parent(c) else {
                continue;
            };
            if s.kind == SpanKind::Consumer || self.spans[p].kind == SpanKind::Producer {
                continue;
            }
            let early = self.start[c] < self.start[p].saturating_sub(CLOCK_SKEW_TOLERANCE_NS);
            let late = self.end[c] > self.end[p].saturating_add(CLOCK_SKEW_TOLERANCE_NS);
            skewed = skewed.saturating_add(u32::from(early || late));
        }
        skewed
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Cuts every cycle of parent links at its earliest-starting member, which is added to
/// `detached`; returns the number of cycles. Linear: each node is walked once.
fn break_cycles(parent: &mut [usize], start: &[i64], detached: &mut Vec<usize>) -> u32 {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; parent.len()];
    let mut path = Vec::new();
    let mut cycles = 0u32;
    for from in 0..parent.len() {
        let mut v = from;
        while v != NONE {
            match state[v] {
                NEW => {
                    state[v] = ON_PATH;
                    path.push(v);
                    v = parent[v];
                }
                ON_PATH => {
                    // v is on the current path: path[at..] is a cycle
                    let at = path.iter().rposition(|&x| x == v).unwrap_or(0);
                    let cut = path[at..]
                        .iter()
                        .copied()
                        .min_by_key(|&x| (start[x], x))
                        .unwrap_or(v);
                    parent[cut] = NONE;
                    detached.push(cut);
                    cycles = cycles.saturating_add(1);
                    break;
                }
                _ => break,
            }
        }
        for &x in &path {
            state[x] = DONE;
        }
        path.clear();
    }
    cycles
}

/// Children lists (offsets and items), each by start, end, span id, index.
fn children(
    parent: &[usize],
    spans: &[Span],
    start: &[i64],
    end: &[i64],
) -> (Vec<usize>, Vec<usize>) {
    let nodes = parent.len();
    let mut off = vec![0usize; nodes + 1];
    for &p in parent {
        if p != NONE {
            off[p + 1] += 1;
        }
    }
    for i in 0..nodes {
        off[i + 1] += off[i];
    }
    let mut fill = off.clone();
    let mut child = vec![0usize; off[nodes]];
    for (c, &p) in parent.iter().enumerate() {
        if p != NONE {
            child[fill[p]] = c;
            fill[p] += 1;
        }
    }
    let id = |i: usize| spans.get(i).map_or(0, |s| s.span_id);
    for v in 0..nodes {
        let kids = &mut child[off[v]..off[v + 1]];
        // spans usually come sorted by start, so most lists already are
        if kids.len() > 1 && !kids.is_sorted_by_key(|&c| (start[c], end[c], id(c), c)) {
            kids.sort_unstable_by_key(|&c| (start[c], end[c], id(c), c));
        }
    }
    (off, child)
}
