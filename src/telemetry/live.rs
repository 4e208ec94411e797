//! The hand-over of live events (closed windows, alert events) from the pipeline to
//! the HTTP listener's subscribers (`/api/spanline/events`, the web UI).
//!
//! The runner publishes each event as the driver emits it; every subscriber gets its
//! own copy through a broadcast channel. Without subscribers nothing is serialised. A
//! subscriber too slow to keep up loses the oldest events, never slows the pipeline.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::LiveEvent;

/// Events a subscriber may fall behind by before it loses the oldest.
pub const BACKLOG: usize = 4096;

/// One published event: its kind (`window`, `alert`) and its JSON object.
#[derive(Debug, Clone)]
pub struct Published {
    pub kind: &'static str,
    pub json: Arc<str>,
}

/// Shared by the runner (which publishes) and the listener (which subscribes).
#[derive(Clone)]
pub struct Live(broadcast::Sender<Published>);

impl Default for Live {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Live {
    /// For the runner: sends `event` to every subscriber as one JSON object, with
    /// `emittedAtMs` (unix milliseconds, `now_ms`) added so clients can tell the delay.
    pub fn publish(&self, event: &LiveEvent, now_ms: i64) {
        if self.0.receiver_count() == 0 {
            return;
        }
        let Ok(mut json) = serde_json::to_value(event) else {
            return;
        };
        if let Some(o) = json.as_object_mut() {
            o.insert("emittedAtMs".into(), now_ms.into());
        }
        let kind = match event {
            LiveEvent::Window(_) => "window",
            LiveEvent::Alert(_) => "alert",
        };
        let json = Arc::from(json.to_string());
        let _ = self.0.send(Published { kind, json });
    }

    /// For the listener: the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LiveWindow;

    fn window() -> LiveEvent {
        LiveEvent::Window(LiveWindow {
            scope: "service".into(),
            key: vec![("service".into(), "orders".into())],
            window_ms: 10_000,
            window_end_ms: 20_000,
            count: 3,
            errors: 0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
        })
    }

    #[tokio::test]
    async fn every_subscriber_gets_each_event_stamped() {
        let live = Live::default();
        live.publish(&window(), 1); // nobody listens: dropped
        let (mut a, mut b) = (live.subscribe(), live.subscribe());
        live.publish(&window(), 42);
        for rx in [&mut a, &mut b] {
            let got = rx.recv().await.unwrap();
            assert_eq!(got.kind, "window");
            let json: serde_json::Value = serde_json::from_str(&got.json).unwrap();
            assert_eq!(json["type"], "window");
            assert_eq!(json["emittedAtMs"], 42);
            assert!(rx.try_recv().is_err(), "only what came after subscribing");
        }
    }
}
