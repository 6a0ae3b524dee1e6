//! Fill: the one module that knows both the upstream and the store.
//!
//! A fill streams one object from an upstream into a temp file of the store while hashing it,
//! and only when length and digest verify does it publish the file under its content hash and
//! append the pin to the journal. Every client that asks for the object meanwhile reads the
//! temp file as it grows (followers never hold a copy of the object in memory), so:
//!
//! - there is exactly one upstream fetch per key, however many clients ask at once;
//! - the first bytes reach clients before the upstream finishes;
//! - the final byte of the object is held back from every client until verification passed;
//!   on mismatch every reader's body ends in an error, so no client gets a complete response;
//! - the fill runs on its own task: a client that disconnects does not abort it, and a slow
//!   client slows no one else (each reader keeps its own file offset).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use http::{HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::body::Body;
use crate::error::{Error, Kind, Origin};
use crate::metrics::Metrics;
use crate::store::{
    CARRY_MAX, CHECKPOINT_EVERY, Carried, ContentHash, Entry, Event, PinEntry, ResolutionEntry,
    Store,
};
use crate::verify::{Expect, Verified, Verifier};

/// Bytes from an upstream body.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// Builds the journal events for a verified object (a pin, and maybe a resolution).
pub type EventsFn = Box<dyn FnOnce(&Verified, Option<&str>) -> Vec<Event> + Send>;

/// What a fill needs from the upstream side once the response headers arrived.
pub struct Source {
    pub stream: ByteStream,
    /// The length the upstream announced (`Content-Length`), if any.
    pub total: Option<u64>,
    pub expect: Expect,
    /// Refuse objects larger than this (manifests).
    pub limit: Option<u64>,
    pub media_type: Option<String>,
    pub idle_timeout: Duration,
    /// Configured upstream name, for metrics and logs.
    pub upstream: String,
    /// Response headers that describe the verified bytes (Maven's `X-Checksum-Sha1` from the
    /// upstream's checksum): sent with the first byte, true once the last byte is.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub events: EventsFn,
}

/// A verified, published object.
#[derive(Debug, Clone)]
pub struct Object {
    pub sha256: ContentHash,
    pub size: u64,
    pub media_type: Option<String>,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub enum State {
    /// Waiting for the upstream's response headers.
    Starting,
    /// Bytes are arriving in `temp`.
    Streaming {
        temp: Arc<PathBuf>,
    },
    Done(Arc<Object>),
    Failed(Error),
}

#[derive(Debug, Clone)]
pub struct Progress {
    pub written: u64,
    /// The object's length when known (upstream `Content-Length` or the promised size).
    pub total: Option<u64>,
    pub media_type: Option<String>,
    /// The source's promised headers.
    pub headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    pub state: State,
}

/// One in-flight fill, shared by every client asking for its key.
pub struct Fill {
    rx: watch::Receiver<Progress>,
}

impl Fill {
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.rx.clone()
    }

    /// Waits until the upstream answered (or the fill failed or finished).
    pub async fn started(&self) -> Progress {
        let mut rx = self.rx.clone();
        let waited = rx
            .wait_for(|p| !matches!(p.state, State::Starting))
            .await
            .map(|p| p.clone());
        waited.unwrap_or_else(|_| rx.borrow().clone())
    }

    /// Waits for the end of the fill.
    pub async fn finished(&self) -> Result<Arc<Object>, Error> {
        let mut rx = self.rx.clone();
        let waited = rx
            .wait_for(|p| matches!(p.state, State::Done(_) | State::Failed(_)))
            .await
            .map(|p| p.clone());
        let p = waited.unwrap_or_else(|_| rx.borrow().clone());
        match p.state {
            State::Done(o) => Ok(o),
            State::Failed(e) => Err(e),
            _ => Err(Error::internal("fill ended without an outcome")),
        }
    }
}

pub struct Fills {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    inflight: Mutex<HashMap<String, Arc<Fill>>>,
}

impl Fills {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            recorder: Recorder::start(store.clone()),
            store,
            metrics,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the fill for `key`, starting it with `start` if none is in flight. The second
    /// value tells whether this call started it (the request is a miss, not coalesced).
    pub fn get_or_start<Fut>(
        self: &Arc<Self>,
        key: &str,
        start: impl FnOnce() -> Fut,
    ) -> (Arc<Fill>, bool)
    where
        Fut: Future<Output = Result<Source, Error>> + Send + 'static,
    {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(key) {
            return (f.clone(), false);
        }
        let (tx, rx) = watch::channel(Progress {
            written: 0,
            total: None,
            media_type: None,
            headers: Arc::default(),
            state: State::Starting,
        });
        let fill = Arc::new(Fill { rx });
        map.insert(key.to_owned(), fill.clone());
        drop(map);
        let fut = start();
        let this = self.clone();
        let key = key.to_owned();
        let span = tracing::info_span!("fill", key = %key, upstream_status = tracing::field::Empty);
        let me = fill.clone();
        // Detached: the fill outlives the request that started it.
        tokio::spawn(
            async move {
                this.metrics.gauge_add("pinproxy_fills_in_flight", &[], 1);
                let outcome = this.drive(&tx, fut).await;
                match outcome {
                    Ok(obj) => tx.send_modify(|p| p.state = State::Done(obj)),
                    Err(e) => tx.send_modify(|p| p.state = State::Failed(e)),
                }
                let mut map = this.inflight.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &me)) {
                    map.remove(&key);
                }
                drop(map);
                this.metrics.gauge_add("pinproxy_fills_in_flight", &[], -1);
            }
            .instrument(span),
        );
        (fill, true)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits until no fill is running, at most `deadline`. Returns whether it got there.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.in_flight() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    async fn drive(
        &self,
        tx: &watch::Sender<Progress>,
        start: impl Future<Output = Result<Source, Error>>,
    ) -> Result<Arc<Object>, Error> {
        let src = start.await?;
        let store = self.store.clone();
        let (temp, file) = blocking(move || store.temp_file())
            .await?
            .map_err(|e| self.store_error(&e))?;
        let temp = Arc::new(temp);
        let total = src.total.or(src.expect.size);
        tx.send_modify(|p| {
            p.total = total;
            p.media_type.clone_from(&src.media_type);
            p.headers = Arc::new(src.headers.clone());
            p.state = State::Streaming { temp: temp.clone() };
        });
        let result = self.stream_into(tx, src, Arc::new(file), &temp).await;
        if result.is_err() {
            self.store.discard_temp(&temp);
        }
        result
    }

    async fn stream_into(
        &self,
        tx: &watch::Sender<Progress>,
        src: Source,
        file: Arc<std::fs::File>,
        temp: &Arc<PathBuf>,
    ) -> Result<Arc<Object>, Error> {
        let Source {
            mut stream,
            total,
            expect,
            limit,
            media_type,
            idle_timeout,
            upstream,
            events,
            ..
        } = src;
        let labels = [("upstream", upstream.as_str())];
        // A small object's bytes, kept to be carried in its pin's record (`CARRY_MAX`).
        let mut carry = total
            .or(expect.size)
            .is_none_or(|n| n <= CARRY_MAX)
            .then(BytesMut::new);
        let mut verifier = Verifier::new(expect, limit);
        let mut written = 0u64;
        loop {
            let first = match tokio::time::timeout(idle_timeout, stream.next()).await {
                Err(_) => {
                    self.metrics.inc(
                        "pinproxy_fills_total",
                        &[("upstream", &upstream), ("outcome", "stalled")],
                    );
                    return Err(Error::upstream(
                        Kind::Timeout,
                        format!(
                            "upstream sent nothing for {}",
                            humantime::format_duration(idle_timeout)
                        ),
                    ));
                }
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.inspect_err(|_| {
                    self.metrics.inc(
                        "pinproxy_fills_total",
                        &[("upstream", &upstream), ("outcome", "failed")],
                    );
                })?,
            };
            // Coalesce chunks that are already there into one write; never wait for more.
            let mut buf = BytesMut::new();
            let mut chunk = first;
            let mut ended = false;
            loop {
                if let Err(m) = verifier.update(&chunk) {
                    return Err(self.mismatch(&upstream, &m.to_string()));
                }
                buf.extend_from_slice(&chunk);
                if buf.len() >= 512 * 1024 {
                    break;
                }
                match stream.next().now_or_never() {
                    Some(Some(Ok(c))) => chunk = c,
                    Some(Some(Err(e))) => return Err(e),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let data = buf.freeze();
            let n = data.len() as u64;
            if let Some(c) = &mut carry {
                if (c.len() + data.len()) as u64 <= CARRY_MAX {
                    c.extend_from_slice(&data);
                } else {
                    carry = None;
                }
            }
            let f = file.clone();
            let off = written;
            blocking(move || f.write_all_at(&data, off))
                .await?
                .map_err(|e| self.io_error("write", temp, &e))?;
            written += n;
            self.metrics
                .add("pinproxy_upstream_bytes_total", &labels, n);
            tx.send_modify(|p| p.written = written);
            if ended {
                break;
            }
        }
        let verified = match verifier.finish() {
            Ok(v) => v,
            Err(m) => return Err(self.mismatch(&upstream, &m.to_string())),
        };
        let store = self.store.clone();
        let temp_path: PathBuf = (**temp).clone();
        let hash = verified.sha256;
        drop(file);
        let mut evs: Vec<(Event, Option<Carried>)> = events(&verified, media_type.as_deref())
            .into_iter()
            .map(|e| (e, None))
            .collect();
        // A small object rides in the record of the first event about it: one journal sync
        // makes both durable, and the record publishes the temp file.
        let carrier = carry
            .filter(|c| c.len() as u64 == verified.size)
            .and_then(|c| Some((evs.iter().position(|(e, _)| *e.content().0 == hash)?, c)));
        let path = if let Some((i, bytes)) = carrier {
            evs[i].1 = Some(Carried {
                bytes: bytes.freeze(),
                temp: temp_path,
            });
            self.recorder
                .record(evs)
                .await?
                .map_err(|e| self.store_error(&e))?;
            self.store.content_path(&hash)
        } else {
            // `publish` fsyncs the file before the rename: done once, there.
            let (path, dir) = blocking(move || store.publish_then_sync_dir(&temp_path, &hash))
                .await?
                .map_err(|e| self.store_error(&e))?;
            // The content file's name and the journal record are made durable at the same
            // time (two fsyncs waited for once); the fill is done only when both are.
            let (dir_synced, recorded) =
                tokio::join!(blocking(move || dir.sync()), self.recorder.record(evs));
            dir_synced?.map_err(|e| self.store_error(&e))?;
            recorded?.map_err(|e| self.store_error(&e))?;
            path
        };
        self.metrics.inc(
            "pinproxy_fills_total",
            &[("upstream", &upstream), ("outcome", "pinned")],
        );
        info!(sha256 = %verified.sha256, bytes = verified.size, "pinned");
        Ok(Arc::new(Object {
            sha256: verified.sha256,
            size: verified.size,
            media_type,
            path,
        }))
    }

    fn mismatch(&self, upstream: &str, what: &str) -> Error {
        self.metrics
            .inc("pinproxy_digest_mismatch_total", &[("upstream", upstream)]);
        self.metrics.inc(
            "pinproxy_fills_total",
            &[("upstream", upstream), ("outcome", "mismatch")],
        );
        warn!(
            upstream,
            "upstream bytes failed verification, nothing pinned: {what}"
        );
        Error::upstream(
            Kind::BadGateway,
            format!("upstream bytes failed verification: {what}"),
        )
    }

    fn store_error(&self, e: &crate::store::StoreError) -> Error {
        if e.is_disk_full() {
            self.metrics.inc("pinproxy_disk_full_total", &[]);
            tracing::error!("disk full: {e}");
        } else {
            tracing::error!("store failure: {e}");
        }
        Error::store(e)
    }

    fn io_error(&self, op: &'static str, path: &Arc<PathBuf>, e: &io::Error) -> Error {
        self.store_error(&crate::store::StoreError::Io {
            op,
            path: (**path).clone(),
            source: io::Error::new(e.kind(), e.to_string()),
        })
    }
}

type RecordReply = tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>;
type RecordRequest = (Vec<(Event, Option<Carried>)>, RecordReply);

/// Group commit for fills: one thread owns journal appends for fills and records the events
/// of every fill that finished meanwhile with one fsync (`Store::record_groups`). Concurrent
/// cold pulls then share fsyncs instead of queueing behind each other's; a fill still
/// completes only once its own records are durable. A second thread checkpoints the store
/// every `CHECKPOINT_EVERY` (syncing what records carried, and the index), off the fills' path.
struct Recorder {
    tx: Option<std::sync::mpsc::Sender<RecordRequest>>,
    /// Dropped to stop the checkpoint thread.
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// Joined on drop, so the store (and its index lock) is released when `Fills` is.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Recorder {
    /// Most fills' events recorded with one fsync.
    const MAX_GROUPS: usize = 256;

    fn start(store: Arc<Store>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<RecordRequest>();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let checkpointed = store.clone();
        let checkpointer = std::thread::Builder::new()
            .name("pinproxy-checkpoint".to_owned())
            .spawn(move || {
                // Ends when the sender is dropped (the `Fills` was dropped).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = checkpointed.checkpoint() {
                        tracing::warn!(error = %e, "cannot checkpoint the store; will retry");
                    }
                }
            });
        let spawned = std::thread::Builder::new()
            .name("pinproxy-recorder".to_owned())
            .spawn(move || {
                // Ends when every sender is gone (the `Fills` was dropped).
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < Self::MAX_GROUPS {
                        match rx.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    let now = SystemTime::now();
                    let (groups, replies): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .map(|(evs, reply)| {
                            let entries = evs
                                .into_iter()
                                .map(|(event, carried)| Entry {
                                    event,
                                    time: now,
                                    carried,
                                })
                                .collect();
                            (entries, reply)
                        })
                        .unzip();
                    // A panic drops this batch's replies (those fills fail), not the thread.
                    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.record_groups(groups)
                    }));
                    if let Ok(results) = results {
                        for (result, reply) in results.into_iter().zip(replies) {
                            let _ = reply.send(result.map(|_| ()));
                        }
                    }
                }
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                // Without the thread every record fails loudly (below), nothing is pinned.
                tracing::error!("cannot start the journal recorder thread: {e}");
                None
            }
        };
        let checkpointer = match checkpointer {
            Ok(t) => Some(t),
            Err(e) => {
                // The store still checkpoints when it is flushed and closed.
                tracing::error!("cannot start the store checkpoint thread: {e}");
                None
            }
        };
        Self {
            tx: Some(tx),
            stop: Some(stop),
            threads: thread.into_iter().chain(checkpointer).collect(),
        }
    }

    async fn record(
        &self,
        events: Vec<(Event, Option<Carried>)>,
    ) -> Result<Result<(), crate::store::StoreError>, Error> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .and_then(|tx| tx.send((events, reply)).ok())
            .ok_or_else(|| Error::internal("the journal recorder thread is gone"))?;
        rx.await
            .map_err(|_| Error::internal("the journal recorder thread is gone"))
    }
}

/// A pin and its content file, looked up on the blocking pool. `None` when the coordinate is
/// not pinned, or its file is gone (the caller fetches again and re-publishes it).
pub async fn pinned(
    store: &Arc<Store>,
    coord: &str,
) -> Result<Option<(Arc<Object>, PinEntry)>, Error> {
    let (s, c) = (store.clone(), coord.to_owned());
    let entry = blocking(move || s.pin(&c))
        .await?
        .map_err(|e| Error::store(&e))?;
    let Some(entry) = entry else { return Ok(None) };
    let path = store.content_path(&entry.pin.sha256);
    if !path.exists() {
        warn!(
            coordinate = coord,
            "pinned content file is missing; fetching again"
        );
        return Ok(None);
    }
    let obj = Arc::new(Object {
        sha256: entry.pin.sha256,
        size: entry.pin.size,
        media_type: entry.pin.media_type.clone(),
        path,
    });
    Ok(Some((obj, entry)))
}

/// The latest resolution of a mutable coordinate and its content file, looked up on the
/// blocking pool; `None` when there is none or its file is gone.
pub async fn resolved(
    store: &Arc<Store>,
    coord: &str,
) -> Result<Option<(ResolutionEntry, Arc<Object>)>, Error> {
    let (s, c) = (store.clone(), coord.to_owned());
    let entry = blocking(move || s.resolution(&c))
        .await?
        .map_err(|e| Error::store(&e))?;
    let Some(entry) = entry else { return Ok(None) };
    let path = store.content_path(&entry.resolution.sha256);
    if !path.exists() {
        return Ok(None);
    }
    let obj = Arc::new(Object {
        sha256: entry.resolution.sha256,
        size: entry.resolution.size,
        media_type: entry.resolution.media_type.clone(),
        path,
    });
    Ok(Some((entry, obj)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(
            Origin::Internal,
            Kind::Internal,
            format!("blocking task failed: {e}"),
        )
    })
}

const READ_CHUNK: u64 = 1024 * 1024;

/// A body serving bytes `start..end` of a fill (or of a finished object), following the fill
/// as it grows. While the fill is not verified, the object's last byte is never sent.
pub fn reader_body(rx: watch::Receiver<Progress>, start: u64, end: u64) -> Body {
    let reader = Reader {
        rx,
        file: None,
        pos: start,
        end,
        failed: false,
        ahead: None,
    };
    let stream = futures_util::stream::unfold(reader, Reader::next).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(stream))
}

/// A body serving bytes `start..end` of a published object.
pub fn object_body(obj: Arc<Object>, start: u64, end: u64) -> Body {
    let (_tx, rx) = watch::channel(Progress {
        written: obj.size,
        total: Some(obj.size),
        media_type: obj.media_type.clone(),
        headers: Arc::default(),
        state: State::Done(obj),
    });
    reader_body(rx, start, end)
}

struct Reader {
    rx: watch::Receiver<Progress>,
    file: Option<Arc<std::fs::File>>,
    pos: u64,
    end: u64,
    failed: bool,
    /// The next chunk, read ahead while the current one is being sent: reading the page
    /// cache and writing the socket then overlap on two cores.
    ahead: Option<(u64, usize, tokio::task::JoinHandle<io::Result<Bytes>>)>,
}

fn read_chunk(
    file: Arc<std::fs::File>,
    pos: u64,
    want: usize,
) -> tokio::task::JoinHandle<io::Result<Bytes>> {
    tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
        use std::io::{Read, Seek, SeekFrom};
        // Each reader owns its file handle and reads one chunk at a time, so the handle's
        // offset is ours; `read_to_end` fills spare capacity without zeroing it first.
        let mut f = &*file;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::with_capacity(want);
        f.take(want as u64).read_to_end(&mut buf)?;
        Ok(Bytes::from(buf))
    })
}

impl Reader {
    async fn next(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        if self.failed {
            return None;
        }
        match self.step().await {
            Ok(Some(b)) => Some((Ok(b), self)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some((Err(e), self))
            }
        }
    }

    async fn step(&mut self) -> Result<Option<Bytes>, io::Error> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            let p = self.rx.borrow_and_update().clone();
            let (limit, path) = match &p.state {
                State::Failed(e) => return Err(io::Error::other(e.to_string())),
                State::Starting => (0, None),
                State::Done(obj) => (obj.size, Some(obj.path.clone())),
                State::Streaming { temp } => {
                    // Hold back the final byte until the object verified.
                    let cap = match p.total {
                        Some(t) => p.written.min(t.saturating_sub(1)),
                        None => p.written.saturating_sub(1),
                    };
                    (cap, Some((**temp).clone()))
                }
            };
            let limit = limit.min(self.end);
            if self.pos < limit {
                if self.file.is_none() {
                    let path = path.unwrap_or_default();
                    match std::fs::File::open(&path) {
                        Ok(f) => self.file = Some(Arc::new(f)),
                        // The temp file was just renamed into place: look at the state again.
                        Err(e)
                            if e.kind() == io::ErrorKind::NotFound
                                && !matches!(p.state, State::Done(_)) =>
                        {
                            if self.rx.changed().await.is_err()
                                && !matches!(self.rx.borrow().state, State::Done(_))
                            {
                                return Err(io::Error::other("fill vanished"));
                            }
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let file = self.file.clone().unwrap_or_else(|| unreachable!());
                let want = (limit - self.pos).min(READ_CHUNK) as usize;
                let pos = self.pos;
                let task = match self.ahead.take() {
                    Some((at, len, task)) if at == pos && len <= want => task,
                    _ => read_chunk(file.clone(), pos, want),
                };
                let bytes = task.await.map_err(io::Error::other)??;
                let next = pos + bytes.len() as u64;
                if !bytes.is_empty() && next < limit {
                    let len = (limit - next).min(READ_CHUNK) as usize;
                    self.ahead = Some((next, len, read_chunk(file, next, len)));
                }
                if bytes.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "object shorter than recorded",
                    ));
                }
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if let State::Done(obj) = &p.state {
                if self.pos >= obj.size {
                    return Ok(None);
                }
            }
            if self.rx.changed().await.is_err() {
                let state = self.rx.borrow().state.clone();
                if !matches!(state, State::Done(_) | State::Failed(_)) {
                    return Err(io::Error::other("fill ended without an outcome"));
                }
            }
        }
    }
}

/// Coalesces concurrent async computations by key; every caller gets a clone of the one result.
/// The computation runs on its own task, so callers that give up do not cancel it.
pub struct SingleFlight<V> {
    map: Mutex<HashMap<String, watch::Receiver<Option<V>>>>,
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` unless a computation for `key` is in flight, and returns its result; `None`
    /// only if the computation panicked.
    pub async fn run<F>(self: &Arc<Self>, key: &str, f: F) -> Option<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut rx = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(rx) = map.get(key) {
                rx.clone()
            } else {
                let (tx, rx) = watch::channel(None);
                map.insert(key.to_owned(), rx.clone());
                let this = self.clone();
                let key = key.to_owned();
                tokio::spawn(async move {
                    let v = f.await;
                    let _ = tx.send(Some(v));
                    this.map
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                });
                rx
            }
        };
        loop {
            if let Some(v) = rx.borrow_and_update().clone() {
                return Some(v);
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    }
}
