//! Thread-per-core serving: the passthrough listener is served by a fixed number of worker
//! threads, each running its own single-threaded tokio runtime with its own `SO_REUSEPORT`
//! listener socket (so the kernel spreads connections over them) and its own upstream
//! connection pools (see [`crate::upstream`], which picks the pool by [`current`]).
//!
//! Why: with one shared multi-threaded runtime, a request's client connection, its upstream
//! connection and the pooled client's connection task could each run on another core, and every
//! hand-off between them was a cross-core wake-up (an IPI, a run-queue lock, a cold cache). Here
//! a connection accepted by a worker is served, forwarded upstream and answered on that
//! worker's thread from accept to close; the only state shared between workers is the
//! configuration snapshot, metrics (though each worker writes its own shard of the request
//! metrics, see [`crate::metrics::shards`]), the usage aggregate and the connection cap, all read
//! or updated without a lock. The cost: no work stealing, so one very busy connection cannot
//! borrow an idle core, which for many small requests over many connections (a gateway's load)
//! matters less than the hand-offs did. This is the shape nginx's workers and Pingora have.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::{ConnectionCap, Handler, Listener, Settings};
use crate::metrics::ConnectionMetrics;

thread_local! {
    /// This thread's worker index; 0 on every thread that is not a worker (the main runtime's,
    /// tests'), which then share worker 0's pools.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running on this thread.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Runs `f` as if this thread were worker `index`: tests of what is kept per worker.
#[cfg(test)]
pub(crate) fn as_worker<R>(index: usize, f: impl FnOnce() -> R) -> R {
    let previous = WORKER.replace(index);
    let result = f();
    WORKER.set(previous);
    result
}

/// One worker, built at startup and not yet running: its runtime and its listener socket.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    /// Always `Some` until the worker runs; taken out there or when the worker is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Taken out when the worker runs: closed when its serving stops accepting, not later.
    listener: Option<std::net::TcpListener>,
}

impl Worker {
    /// A worker for each of `listeners`, each with a single-threaded runtime.
    pub fn build(listeners: Vec<std::net::TcpListener>) -> std::io::Result<Vec<Worker>> {
        listeners
            .into_iter()
            .enumerate()
            .map(|(index, listener)| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok(Worker { index, runtime: Some(runtime), listener: Some(listener) })
            })
            .collect()
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's task panics; never run, it has nothing to
        // wait for anyway.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What every worker serves its listener with.
#[derive(Debug)]
pub struct Serving<H> {
    pub name: &'static str,
    pub handler: Arc<H>,
    pub settings: Settings,
    pub cap: ConnectionCap,
    pub metrics: ConnectionMetrics,
}

/// Runs every worker on its own thread until `shutdown` resolves, then lets each drain its
/// connections (for up to the grace period, as [`super::serve`] does) and returns once all
/// have stopped.
pub async fn serve<H: Handler>(workers: Vec<Worker>, serving: Serving<H>, shutdown: impl Future<Output = ()>) {
    let (stop, stopped) = watch::channel(false);
    let mut finished = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let (done, finished_rx) = oneshot::channel::<()>();
        let index = worker.index;
        let name = serving.name;
        let handler = serving.handler.for_worker();
        let settings = serving.settings;
        let cap = serving.cap.clone();
        let metrics = serving.metrics.clone();
        let mut stopped = stopped.clone();
        // The whole worker moves into the thread: were the thread not to start, dropping it
        // shuts its runtime down without blocking this one.
        let spawned = std::thread::Builder::new().name(format!("aurora-worker-{index}")).spawn(move || {
            WORKER.set(index);
            let (Some(runtime), Some(std_listener)) = (worker.runtime.take(), worker.listener.take()) else { return };
            let served = runtime.block_on(async {
                let tcp = tokio::net::TcpListener::from_std(std_listener)?;
                let listener = Listener { name, tcp, cap, metrics };
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                super::serve(listener, handler, settings, shutdown).await;
                Ok::<(), std::io::Error>(())
            });
            if let Err(err) = served {
                tracing::error!(listener = name, worker = index, error = %err, "worker could not serve its listener");
            }
            // Here, on its own thread and outside any runtime, the runtime may block to stop.
            drop(runtime);
            drop(worker);
            let _ = done.send(());
        });
        match spawned {
            Ok(_) => finished.push(finished_rx),
            Err(err) => tracing::error!(listener = name, worker = index, error = %err, "cannot start a worker thread"),
        }
    }
    tracing::info!(listener = serving.name, workers = finished.len(), "serving on worker threads");

    shutdown.await;
    stop.send_replace(true);
    for worker in finished {
        // An error means the worker's thread panicked: it has stopped serving either way.
        if worker.await.is_err() {
            tracing::error!(listener = serving.name, "a worker thread ended abnormally");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::config::{ConnectionConfig, Limits};

    /// Answers with the name of the thread that served the request.
    struct ThreadName;

    impl Handler for ThreadName {
        type Body = Full<bytes::Bytes>;

        async fn call(self: Arc<Self>, _request: Request<crate::server::ClientBody>) -> Response<Full<bytes::Bytes>> {
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            Response::new(Full::new(bytes::Bytes::from(format!("{name} {}", current()))))
        }
    }

    fn settings() -> Settings {
        Settings {
            limits: Limits { max_request_body_bytes: 1024, max_header_bytes: 8192 },
            connections: ConnectionConfig {
                max_connections: 3,
                idle_timeout: Duration::from_secs(60),
                keepalive_interval: Duration::from_secs(60),
                keepalive_timeout: Duration::from_secs(60),
            },
            grace: Duration::from_secs(5),
        }
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// Reads until the server closes the connection (a refused one is closed unanswered).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn workers_share_one_port_and_one_connection_cap_and_all_stop() {
        let listeners = crate::server::bind_shared("test", "127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners[1].local_addr().unwrap(), addr, "the second socket joins the first one's port");
        let workers = Worker::build(listeners).unwrap();
        let serving = Serving {
            name: "test",
            handler: Arc::new(ThreadName),
            settings: settings(),
            cap: ConnectionCap::new(3),
            metrics: ConnectionMetrics::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(workers, serving, async {
            let _ = stopped.await;
        }));

        // Served on a worker thread, by the worker the thread-local names.
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let answer = get(&mut stream).await;
            let body = answer.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned();
            let (thread, index) = body.split_once(' ').unwrap();
            assert_eq!(thread, format!("aurora-worker-{index}"), "{answer}");
            open.push(stream);
        }
        // Three connections are open across the two sockets: the cap holds for the process.
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let _ = refused.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await;
        assert!(closed(&mut refused).await, "a fourth connection is closed unserved");
        drop(open);

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "every worker's socket is closed");
    }
}
