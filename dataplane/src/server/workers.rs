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
//! configuration snapshot, metrics, the usage aggregate and the connection cap, all read or
//! updated without a lock. The cost: no work stealing, so one very busy connection cannot
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
        let handler = serving.handler.clone();
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
