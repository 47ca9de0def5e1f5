//! Watch streams: newline-delimited JSON events read from the store's history.
//!
//! A watch never holds a queue the writer has to fill: it keeps a cursor (the newest version
//! it has looked at) and, when woken by the version counter, copies the changes after its
//! cursor out of the history under the store lock, a batch at a time. A writer therefore never
//! waits for a watcher. A watcher that falls so far behind (or whose client reads so slowly)
//! that the history no longer reaches back to its cursor gets the real server's answer: an
//! `ERROR` event with a `410 Expired` `Status`, and the end of the stream.
//!
//! Bookmarks carry the cursor, so every change up to a bookmark's version that matches the
//! watch has been sent before it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::ApiError;
use crate::render::{Rendered, View};
use crate::server::Shared;
use crate::store::{ChangeKind, Filter};

/// Changes copied out of the history per lock.
const BATCH: usize = 512;

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    object: Rendered<'a>,
}

fn push_line(buf: &mut Vec<u8>, ty: &'static str, object: Rendered<'_>) {
    if serde_json::to_writer(&mut *buf, &Line { ty, object }).is_ok() {
        buf.push(b'\n');
    }
}

fn push_value(buf: &mut Vec<u8>, ty: &str, object: &Value) {
    if serde_json::to_writer(&mut *buf, &json!({"type": ty, "object": object})).is_ok() {
        buf.push(b'\n');
    }
}

/// The `BOOKMARK` event at version `rv`.
fn bookmark(view: &View, rv: u64, initial_end: bool) -> Bytes {
    let (kind, api_version) = view.object_type();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut buf = Vec::new();
    push_value(
        &mut buf,
        "BOOKMARK",
        &json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
    );
    Bytes::from(buf)
}

/// The `ERROR` event for a watch whose version the history no longer reaches.
pub(crate) fn expired_line(wanted: u64, floor: u64) -> Bytes {
    let err = ApiError::expired(format!("too old resource version: {wanted} ({floor})"));
    let mut buf = Vec::new();
    push_value(&mut buf, "ERROR", &err.to_status());
    Bytes::from(buf)
}

/// How a watch starts.
#[derive(Debug)]
pub(crate) enum Start {
    /// Synthetic `ADDED` events for these objects, at version `rv`; with `initial_end`, a
    /// bookmark marking their end (the streaming-list mode).
    Initial {
        objects: Vec<Arc<Value>>,
        rv: u64,
        initial_end: bool,
    },
    /// Replay the changes after `rv`.
    From(u64),
    /// Too old: one `ERROR` event.
    Expired { wanted: u64, floor: u64 },
}

/// Counts a watch as open while it lives.
#[derive(Debug)]
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open watch.
#[derive(Debug)]
pub(crate) struct WatchStream {
    shared: Arc<Shared>,
    filter: Filter,
    view: View,
    cursor: u64,
    pending: VecDeque<Bytes>,
    caught_up: bool,
    done: bool,
    rv_rx: watch::Receiver<u64>,
    close_rx: watch::Receiver<u64>,
    bookmarks: Option<tokio::time::Interval>,
    deadline: Option<Instant>,
    _guard: OpenGuard,
}

// === impl WatchStream ===

impl WatchStream {
    /// Opens a watch. `timeout`: the `timeoutSeconds` after which the stream ends.
    pub(crate) fn new(
        shared: Arc<Shared>,
        filter: Filter,
        view: View,
        start: Start,
        bookmarks: bool,
        timeout: Option<Duration>,
    ) -> Self {
        // Subscribe before anything is read, so no commit after `start` goes unnoticed.
        let rv_rx = shared.rv_tx.subscribe();
        let close_rx = shared.close_tx.subscribe();
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(shared.clone());
        let period = shared.bookmark_interval;
        let bookmarks = bookmarks.then(|| {
            let mut i = tokio::time::interval_at(Instant::now() + period, period);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let mut w = Self {
            shared,
            filter,
            view,
            cursor: 0,
            pending: VecDeque::new(),
            caught_up: false,
            done: false,
            rv_rx,
            close_rx,
            bookmarks,
            deadline: timeout.map(|t| Instant::now() + t),
            _guard: guard,
        };
        match start {
            Start::Initial {
                objects,
                rv,
                initial_end,
            } => {
                w.cursor = rv;
                for chunk in objects.chunks(BATCH) {
                    let mut buf = Vec::new();
                    for o in chunk {
                        push_line(&mut buf, "ADDED", w.view.object(o));
                    }
                    w.pending.push_back(Bytes::from(buf));
                }
                if initial_end {
                    w.pending.push_back(bookmark(&w.view, rv, true));
                }
            }
            Start::From(rv) => w.cursor = rv,
            Start::Expired { wanted, floor } => {
                w.pending.push_back(expired_line(wanted, floor));
                w.done = true;
            }
        }
        w
    }

    /// The response body.
    pub(crate) fn into_body(self) -> Body {
        let stream = futures_util::stream::unfold(self, |mut w| async move {
            w.next_chunk()
                .await
                .map(|b| (Ok::<Bytes, Infallible>(b), w))
        });
        Body::from_stream(stream)
    }

    fn closed(&self) -> bool {
        self.close_rx.has_changed().unwrap_or(true) || self.shared.closing.load(Ordering::SeqCst)
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.closed() {
                return None;
            }
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            if !self.caught_up {
                self.fill();
                continue;
            }
            let deadline = self.deadline;
            let ticker = self.bookmarks.as_mut();
            tokio::select! {
                biased;
                _ = self.close_rx.changed() => return None,
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => return None,
                r = self.rv_rx.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    self.caught_up = false;
                }
                _ = async {
                    match ticker {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    self.pending.push_back(bookmark(&self.view, self.cursor, false));
                }
            }
        }
    }

    /// Copies the next batch of changes out of the history and renders those that concern
    /// this watch.
    fn fill(&mut self) {
        // Mark the counter seen before reading, so a commit after the read wakes us again.
        self.rv_rx.borrow_and_update();
        let (changes, latest) = {
            let store = self.shared.store.lock();
            match store.changes_after(self.cursor, BATCH) {
                Some(c) => (c, store.rv),
                None => {
                    let floor = store.floor;
                    drop(store);
                    self.pending.push_back(expired_line(self.cursor, floor));
                    self.done = true;
                    return;
                }
            }
        };
        let mut buf = Vec::new();
        for c in &changes {
            self.cursor = c.rv;
            if c.table != self.filter.table {
                continue;
            }
            let now = self.filter.matches(&c.key, &c.obj);
            let before = c
                .prev
                .as_ref()
                .is_some_and(|p| self.filter.matches(&c.key, p));
            match c.kind {
                ChangeKind::Added if now => push_line(&mut buf, "ADDED", self.view.object(&c.obj)),
                ChangeKind::Modified if now && before => {
                    push_line(&mut buf, "MODIFIED", self.view.object(&c.obj))
                }
                // Entered the selection: the watcher never saw it.
                ChangeKind::Modified if now => {
                    push_line(&mut buf, "ADDED", self.view.object(&c.obj))
                }
                // Left the selection: the old content, at the change's version.
                ChangeKind::Modified if before => {
                    if let Some(p) = &c.prev {
                        push_line(&mut buf, "DELETED", self.view.object(p).at_version(c.rv));
                    }
                }
                ChangeKind::Deleted if before || now => {
                    push_line(&mut buf, "DELETED", self.view.object(&c.obj))
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            self.cursor = self.cursor.max(latest);
        }
        self.caught_up = self.cursor >= latest;
        if !buf.is_empty() {
            self.pending.push_back(Bytes::from(buf));
        }
    }
}
