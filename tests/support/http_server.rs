//! Server plumbing shared by the in-process test servers ([`super::fake_npm`],
//! [`super::fake_oci`], [`super::fake_maven`], [`super::static_repo`]): binding a port that a
//! just-stopped instance may still hold, the accept loop, and a handle that stops it all at
//! once so that a test can show a client facing a closed port.

use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// Locks `m`, ignoring poisoning: a test that panicked while holding it must not take every
/// later request down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accept loop plus its live connections. The listener sits in a shared slot so that
/// `abort` closes the port synchronously, even before the aborted task is dropped.
/// Dropping the handle aborts it.
pub(crate) struct ServerHandle {
    listener: Arc<Mutex<Option<TcpListener>>>,
    accept: AbortHandle,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl ServerHandle {
    /// Closes the listener and aborts the accept loop and every live connection.
    pub(crate) fn abort(&self) {
        drop(lock(&self.listener).take());
        self.accept.abort();
        for c in lock(&self.conns).drain(..) {
            c.abort();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A fake's listening side: one address, served by `serve`, stopped and started again on
/// the same address while the fake's content and counters live on.
pub(crate) struct Listening {
    name: &'static str,
    addr: SocketAddr,
    serve: Box<dyn Fn(TcpListener) -> ServerHandle + Send + Sync>,
    server: Mutex<Option<ServerHandle>>,
}

impl Listening {
    /// Starts serving `listener` (bound with [`bind`] under `name`) with `serve`.
    pub(crate) fn serve(
        name: &'static str,
        listener: TcpListener,
        serve: impl Fn(TcpListener) -> ServerHandle + Send + Sync + 'static,
    ) -> Self {
        let addr = listener.local_addr().expect("local_addr");
        let server = serve(listener);
        Self {
            name,
            addr,
            serve: Box::new(serve),
            server: Mutex::new(Some(server)),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and aborts every live connection.
    pub(crate) fn stop(&self) {
        drop(lock(&self.server).take());
    }

    /// Listens again on the same address after [`Self::stop`].
    pub(crate) async fn restart(&self) {
        self.stop();
        let listener = bind(self.name, self.addr).await;
        *lock(&self.server) = Some((self.serve)(listener));
    }
}

/// Bind, retrying for a while if the port is still held by a just-stopped instance.
/// `name` (e.g. `fake_npm`) prefixes the panic message.
pub(crate) async fn bind(name: &str, addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{name}: cannot bind {addr}: {e}"),
        }
    }
}

/// Serves HTTP/1 and HTTP/2 on `listener`, each request answered by `handler`, with
/// `TCP_NODELAY` on every connection. An accept error (e.g. out of file descriptors) is
/// retried after 10 ms rather than ending the loop.
pub(crate) fn spawn<H, F, B, E>(listener: TcpListener, handler: H) -> ServerHandle
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let slot = Arc::new(Mutex::new(Some(listener)));
    let conns = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
    let (slot_in_loop, conns_in_loop) = (Arc::clone(&slot), Arc::clone(&conns));
    let accept = tokio::spawn(async move {
        loop {
            let accepted = poll_fn(|cx| match lock(&slot_in_loop).as_ref() {
                Some(listener) => listener.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            });
            let stream = match accepted.await {
                Some(Ok((stream, _))) => stream,
                Some(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                None => return,
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let task = tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(handler))
                    .await;
            });
            let mut conns = lock(&conns_in_loop);
            conns.retain(|c| !c.is_finished());
            conns.push(task.abort_handle());
        }
    });
    ServerHandle {
        listener: slot,
        accept: accept.abort_handle(),
        conns,
    }
}
