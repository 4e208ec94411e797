//! `GET /api/spanline/events`: server-sent events, one per closed aggregate window
//! (`event: window`) and per alert event (`event: alert`) of the pipeline in this
//! process, as it emits them (see `telemetry::live`). There in `run` and `demo`; in
//! `serve` the stream stays open and quiet (no pipeline runs there).
//!
//! Each event's data is one JSON object with `type` and `emittedAtMs` (when the
//! pipeline emitted it, unix milliseconds). A client that falls behind by more than
//! the backlog gets an `event: lagged` with the number of events it lost.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_core::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::api::{refusal, TOKEN_ENV};
use crate::telemetry::live::{Live, Published};

/// The route's path.
pub const PATH: &str = "/api/spanline/events";

#[derive(Clone)]
struct EventsState {
    live: Live,
    token: Option<std::sync::Arc<str>>,
}

/// The route, protected by the API's bearer token when `SPANLINE_API_TOKEN` is set.
pub fn router(live: Live) -> Router {
    with_token(live, std::env::var(TOKEN_ENV).ok())
}

fn with_token(live: Live, token: Option<String>) -> Router {
    let state = EventsState {
        live,
        token: token.filter(|t| !t.is_empty()).map(Into::into),
    };
    Router::new()
        .route(PATH, get(events))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn events(State(state): State<EventsState>) -> Sse<KeepAliveStream<Subscription>> {
    Sse::new(Subscription::new(state.live.subscribe()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

type Pending = Pin<Box<dyn Future<Output = (Result<Published, RecvError>, Rx)> + Send>>;
type Rx = broadcast::Receiver<Published>;

/// A subscriber's events as a stream: one pending receive at a time, which hands the
/// receiver back with its result.
struct Subscription(Pending);

impl Subscription {
    fn new(rx: Rx) -> Self {
        Self(Self::next(rx))
    }

    fn next(mut rx: Rx) -> Pending {
        Box::pin(async move { (rx.recv().await, rx) })
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (result, rx) = match self.0.as_mut().poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        self.0 = Self::next(rx);
        Poll::Ready(match result {
            Ok(p) => Some(Ok(Event::default().event(p.kind).data(&*p.json))),
            Err(RecvError::Lagged(n)) => {
                Some(Ok(Event::default().event("lagged").data(n.to_string())))
            }
            Err(RecvError::Closed) => None,
        })
    }
}

async fn authorize(State(state): State<EventsState>, request: Request, next: Next) -> Response {
    match refusal(state.token.as_deref(), &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LiveEvent, LiveWindow};

    #[tokio::test]
    async fn the_token_is_required_when_set() {
        let app = with_token(Live::default(), Some("s3cret".into()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}{PATH}");
        let client = reqwest::Client::new();
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let ok = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }

    #[tokio::test]
    async fn a_subscriber_receives_what_the_pipeline_publishes() {
        let live = Live::default();
        let app = with_token(live.clone(), None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut response = reqwest::get(format!("http://{addr}{PATH}")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let w = LiveEvent::Window(LiveWindow {
            scope: "service".into(),
            key: vec![("service".into(), "orders".into())],
            window_ms: 10_000,
            window_end_ms: 20_000,
            count: 5,
            errors: 1,
            p50_ms: Some(3.0),
            p99_ms: Some(9.0),
        });
        // the subscription starts with the request: publish until it is in
        let mut got = String::new();
        while !got.contains("\n\n") {
            live.publish(&w, 7);
            if let Ok(chunk) =
                tokio::time::timeout(Duration::from_millis(50), response.chunk()).await
            {
                let chunk = chunk.unwrap().expect("the stream stays open");
                got.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        assert!(got.starts_with("event: window\ndata: {"), "{got}");
        assert!(got.contains(r#""emittedAtMs":7"#), "{got}");
        let alert: crate::model::Alert = serde_json::from_value(serde_json::json!({
            "fingerprint": "f1", "status": "firing", "rule": "errors", "severity": "critical",
            "starts_at_ms": 1, "ends_at_ms": null, "labels": {}, "annotations": {},
            "summary": "s", "suspected_service": "orders", "score": 0.0, "value": 0.5,
            "exemplar_trace_ids": []
        }))
        .unwrap();
        let mut got = String::new();
        while !got.contains("event: alert\n") {
            live.publish(&LiveEvent::Alert(Box::new(alert.clone())), 8);
            let chunk = response.chunk().await.unwrap().expect("open");
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
