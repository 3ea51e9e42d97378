//! `GET /api/events`: server-sent events, one `torrents` event a second with the whole list
//! (the JSON of `GET /api/torrents`), and `GET /`, the web page that follows them.
//!
//! The stream ends when the session shuts down, so the API server's graceful shutdown is
//! never held by an open stream. The page needs no token itself; it takes one from
//! `/#token=T` (or `?token=T`) and sends it as a bearer token on each API call.
use super::Daemon;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often the list is sent.
const PERIOD: Duration = Duration::from_secs(1);

/// The page, built into the binary.
const PAGE: &str = include_str!("page.html");

pub async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

pub async fn events(State(d): State<Arc<Daemon>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cancel = d.session().cancel_token();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((d, tick), move |(d, mut tick)| {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => None,
                _ = tick.tick() => {
                    let list = d.list().await;
                    let event = Event::default().event("torrents").json_data(&list).unwrap_or_default();
                    Some((Ok(event), (d, tick)))
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
