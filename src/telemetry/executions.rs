//! The hand-over of running executions between the pipeline and the HTTP listener.
//!
//! Summarising open traces costs a pass over them, so the pipeline does it only when
//! asked: a request marks the handle, the runner's next tick publishes a snapshot, and
//! the request waits for it (the runner ticks every 200 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::RunningSnapshot;

/// Open traces listed at most, per request.
pub const MAX_LIMIT: usize = 1000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutionsQuery {
    pub limit: usize,
    pub service: Option<String>,
}

struct Inner {
    wanted: AtomicBool,
    query: Mutex<ExecutionsQuery>,
    published: watch::Sender<Option<Arc<RunningSnapshot>>>,
}

/// Shared by the runner (which publishes) and the listener (which asks).
#[derive(Clone)]
pub struct Executions(Arc<Inner>);

impl Default for Executions {
    fn default() -> Self {
        Self(Arc::new(Inner {
            wanted: AtomicBool::new(false),
            query: Mutex::new(ExecutionsQuery::default()),
            published: watch::channel(None).0,
        }))
    }
}

impl Executions {
    /// For the runner: the query to answer, when a request waits for one.
    pub fn wanted(&self) -> Option<ExecutionsQuery> {
        if !self.0.wanted.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(self.0.query.lock().map(|q| q.clone()).unwrap_or_default())
    }

    /// For the runner: the answer.
    pub fn publish(&self, snapshot: RunningSnapshot) {
        self.0.published.send_replace(Some(Arc::new(snapshot)));
    }

    /// For the listener: asks the pipeline and waits up to `timeout` for its answer;
    /// `None` when no pipeline answered (none runs in this process, or it is stuck).
    /// Requests at the same moment share one answer, computed for the last query.
    pub async fn ask(
        &self,
        query: ExecutionsQuery,
        timeout: Duration,
    ) -> Option<Arc<RunningSnapshot>> {
        let mut rx = self.0.published.subscribe();
        rx.mark_unchanged();
        if let Ok(mut q) = self.0.query.lock() {
            *q = query;
        }
        self.0.wanted.store(true, Ordering::Release);
        match tokio::time::timeout(timeout, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_answered_by_the_next_publication() {
        let handle = Executions::default();
        assert_eq!(handle.wanted(), None, "nobody asked yet");
        let runner = handle.clone();
        let answer = tokio::spawn(async move {
            let query = ExecutionsQuery {
                limit: 5,
                service: Some("orders".into()),
            };
            handle.ask(query, Duration::from_secs(30)).await
        });
        // the runner's ticks: nothing to do until the request is in
        let query = loop {
            if let Some(q) = runner.wanted() {
                break q;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(query.limit, 5);
        assert_eq!(query.service.as_deref(), Some("orders"));
        assert_eq!(runner.wanted(), None, "one request, one snapshot");
        runner.publish(RunningSnapshot {
            at_ms: 7,
            open_traces: 3,
            traces: Vec::new(),
        });
        let snap = answer.await.unwrap().expect("answered");
        assert_eq!((snap.at_ms, snap.open_traces), (7, 3));
    }

    #[tokio::test]
    async fn no_runner_means_no_answer_after_the_timeout() {
        let handle = Executions::default();
        let q = ExecutionsQuery::default();
        assert!(handle.ask(q, Duration::from_millis(10)).await.is_none());
    }
}
