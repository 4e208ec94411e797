//! Figure 4: live heap per buffered span. The program's global allocator is defined
//! here, for every figure: the binary's (mimalloc), counted only while this one measures.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

// the binary's allocator, counted
use mimalloc::MiMalloc as System;

use spanline::model::Span;
use spanline::runner::wall_ms;

use super::assemble::{keep_open_settings, Stage};
use super::common::{avro_decoder, avro_record, note, MEMORY_SPANS, POLL_BATCH, SCHEMA_ID};

// ---------------------------------------------------------------------------------------
// Counting allocator: live heap bytes, counted only while COUNTING is on (the memory
// figure needs deltas over one window; the throughput figures should not pay for it).

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn grow(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(n, Ordering::Relaxed);
    }
}

#[inline]
fn shrink(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grow(new_size);
            shrink(layout.size());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Figure 4: live heap per buffered span, and encoded Avro bytes per span (frame included).
pub fn memory(spans: &[Span]) -> (f64, f64) {
    let records: Vec<Vec<u8>> = spans
        .iter()
        .take(MEMORY_SPANS)
        .map(|s| avro_record(s, SCHEMA_ID))
        .collect();
    let encoded_bytes: usize = records.iter().map(Vec::len).sum();
    let mut decoder = avro_decoder();
    let mut stage = Stage::new(keep_open_settings());
    let mut scratch: Vec<Span> = Vec::with_capacity(1);

    COUNTING.store(true, Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    for (b, batch) in records.chunks(POLL_BATCH).enumerate() {
        let now = wall_ms();
        for (i, record) in batch.iter().enumerate() {
            let offset = (b * POLL_BATCH + i) as i64;
            stage.consumed(offset);
            scratch.clear();
            decoder
                .decode(record, &mut scratch)
                .expect("record decodes");
            for span in scratch.drain(..) {
                stage.push(span, offset, now);
            }
        }
        stage.advance();
    }
    let after = LIVE.load(Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);

    let buffered = stage.assembler.buffered_spans();
    assert_eq!(buffered, records.len(), "every span stays buffered");
    assert_eq!(stage.traces, 0, "nothing closes");
    let live = after.wrapping_sub(before) as f64;
    let per_span = live / buffered as f64;
    let encoded = encoded_bytes as f64 / records.len() as f64;
    let accounted = stage.assembler.buffered_bytes() as f64 / buffered as f64;
    note(format_args!(
        "memory: {} spans in {} open traces; live heap grew {:.1} MB; Span::memory_size accounts {:.1} bytes/span; size_of::<Span>() = {}",
        buffered,
        stage.assembler.open_traces(),
        live / 1e6,
        accounted,
        std::mem::size_of::<Span>()
    ));
    drop(stage);
    drop(decoder);
    (per_span, encoded)
}
