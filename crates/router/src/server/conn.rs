//! Accepting connections and bounding how long each may hold a socket.
//!
//! tonic's own accept loop retries a failing `accept` at once, so at the
//! file-descriptor limit (`EMFILE`) it spins a core and logs nothing; it
//! also waits for a TLS ClientHello, or an HTTP/2 preface, forever. Here
//! the router accepts itself ([`accept`]): an accept error is logged (at
//! most once per [`ACCEPT_LOG_EVERY`]) and backs off for [`ACCEPT_BACKOFF`].
//!
//! Each accepted socket is wrapped in a [`Guarded`] stream that closes it:
//! - when it has had no call open for `handshake_timeout` since it was
//!   accepted and has never started one (a TLS handshake that never
//!   completes, a client that never speaks HTTP/2);
//! - when it has had no call open for `idle_timeout` after its last call;
//! - once the router stops: when none of its calls is still running a
//!   handler (a decision), after [`FLUSH_AFTER_STOP`] to deliver the last
//!   answers. Streams a client does not read would otherwise keep hyper's
//!   graceful shutdown waiting for the whole grace period.
//!
//! The wrapper sits under TLS, so it sees neither calls nor frames: the
//! calls are counted by [`super::layers::FrontLayer`] in the connection's
//! [`ConnState`], which the connection hands every request it carries
//! ([`ConnInfo`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// How long the accept loop pauses after an accept error such as `EMFILE`:
/// retrying at once cannot succeed until some connection closes.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors are logged at most this often (with a count).
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// After shutdown, how long a connection with no handler running keeps its
/// socket so the last answers can reach a client that reads them.
pub const FLUSH_AFTER_STOP: Duration = Duration::from_secs(1);

/// How long a connection may sit without calls.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Before its first call (covers the TLS and HTTP/2 handshakes).
    pub handshake: Duration,
    /// After its last call ended.
    pub idle: Duration,
}

/// What one connection is doing, as the call layer counts it.
#[derive(Debug)]
pub struct ConnState {
    /// Calls whose handler has not answered yet.
    running: AtomicUsize,
    /// Calls whose response has not ended yet (streams included).
    open: AtomicUsize,
    started: AtomicBool,
    last_change: Mutex<Instant>,
    /// The connection's task, woken when its last call ends and the idle
    /// deadline comes before its armed timer, or when the router stops.
    waker: Mutex<Option<Waker>>,
    /// When the connection's timer fires next (it then looks again).
    armed: Mutex<Instant>,
    /// Set when the deadline came before the armed timer: the connection's
    /// task must look again at its next poll, not wait for the timer.
    recheck: AtomicBool,
    idle: Duration,
    /// When the router began to stop, shared by every connection.
    stopping: Arc<OnceLock<Instant>>,
}

impl ConnState {
    fn new(limits: Timeouts, stopping: Arc<OnceLock<Instant>>) -> Self {
        let now = Instant::now();
        Self {
            running: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last_change: Mutex::new(now),
            waker: Mutex::new(None),
            armed: Mutex::new(now + limits.handshake),
            // The first look arms the timer.
            recheck: AtomicBool::new(true),
            idle: limits.idle,
            stopping,
        }
    }

    /// Notes when the connection's timer fires next.
    fn arm(&self, at: Instant) {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    fn wake(&self) {
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn touch(&self) -> Instant {
        let now = Instant::now();
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner()) = now;
        now
    }

    fn last_change(&self) -> Instant {
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call began: its handler runs and its response is open. (No clock
    /// read: while a call is open no deadline counts from the last change.)
    pub fn begin(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    /// A call's handler answered (or was dropped). Only a stopping
    /// connection's deadline depends on running handlers, and on when the
    /// last one answered; otherwise the response ending counts.
    pub fn answered(&self) {
        let before = self.running.fetch_sub(1, Ordering::AcqRel);
        if self.stopping.get().is_some() {
            self.touch();
            if before == 1 {
                self.wake();
            }
        }
    }

    /// A call's response ended (or was dropped). The connection's task is
    /// woken only when its idle deadline now comes before its armed timer
    /// (the first call of a connection whose idle limit is shorter than
    /// its handshake one) or the router is stopping: otherwise the timer
    /// fires first and the deadline is looked at then. A wake per call
    /// would poll the whole HTTP/2 connection once more per call.
    pub fn closed(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        let now = self.touch();
        if before == 1
            && (self.stopping.get().is_some()
                || now + self.idle < *self.armed.lock().unwrap_or_else(|p| p.into_inner()))
        {
            self.recheck.store(true, Ordering::Release);
            self.wake();
        }
    }

    /// Whether the deadline moved before the armed timer since the last
    /// look (and clears that).
    fn take_recheck(&self) -> bool {
        self.recheck.load(Ordering::Acquire) && self.recheck.swap(false, Ordering::AcqRel)
    }

    /// When the connection must next be looked at, or `None` when it must
    /// close now.
    fn next_check(
        &self,
        now: Instant,
        limits: Timeouts,
        stopped_at: Option<Instant>,
    ) -> Option<Instant> {
        let due = |at: Instant| (at > now).then_some(at);
        if let Some(stopped) = stopped_at {
            if self.running.load(Ordering::Acquire) > 0 {
                return Some(now + FLUSH_AFTER_STOP);
            }
            return due(stopped.max(self.last_change()) + FLUSH_AFTER_STOP);
        }
        let limit = if self.started.load(Ordering::Relaxed) {
            limits.idle
        } else {
            limits.handshake
        };
        if self.open.load(Ordering::Acquire) > 0 {
            return Some(now + limit);
        }
        due(self.last_change() + limit)
    }
}

/// The live connections by peer address: counted for the logs, and woken
/// all at once when the router stops.
#[derive(Debug, Default)]
pub struct Connections {
    by_peer: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
    /// When the router began to stop: read by every connection on its
    /// next check, which [`Connections::stop_all`] brings forward.
    stopped: Arc<OnceLock<Instant>>,
}

impl Connections {
    /// The router is stopping: every connection looks at its deadline now.
    fn stop_all(&self) {
        let _ = self.stopped.set(Instant::now());
        for state in self.lock().values() {
            state.wake();
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<ConnState>>> {
        self.by_peer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Accepts on `listener` until the returned stream is dropped, wrapping
/// each socket in a [`Guarded`] stream.
pub fn accept(
    listener: TcpListener,
    connections: Arc<Connections>,
    limits: Timeouts,
    stop: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(1);
    let all = Arc::clone(&connections);
    let mut stopping = stop;
    tokio::spawn(async move {
        crate::stream::stopped(&mut stopping).await;
        all.stop_all();
    });
    tokio::spawn(async move {
        let mut errors = 0u64;
        let mut logged: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // tonic dropped the stream: stop accepting, close the socket.
                () = tx.closed() => break,
            };
            let (socket, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) if per_connection(&e) => {
                    debug!(error = %e, "connection failed while being accepted");
                    continue;
                }
                Err(e) => {
                    errors += 1;
                    if logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY) {
                        warn!(error = %e, errors, backoff = ?ACCEPT_BACKOFF,
                            "cannot accept connections (file descriptor limit?)");
                        logged = Some(Instant::now());
                        errors = 0;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Small unary calls: Nagle's algorithm would only add latency.
            let _ = socket.set_nodelay(true);
            let guarded = Guarded::new(socket, peer, &connections, limits);
            if tx.send(Ok(guarded)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Errors that concern one connection only: the next accept may succeed.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// An accepted socket that closes itself when [`ConnState::next_check`]
/// says so: its reads and writes then fail, and hyper drops the connection.
pub struct Guarded {
    socket: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    connections: Arc<Connections>,
    limits: Timeouts,
    check: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(
        socket: TcpStream,
        peer: SocketAddr,
        connections: &Arc<Connections>,
        limits: Timeouts,
    ) -> Self {
        let state = Arc::new(ConnState::new(limits, Arc::clone(&connections.stopped)));
        connections.lock().insert(peer, Arc::clone(&state));
        Self {
            socket,
            peer,
            state,
            connections: Arc::clone(connections),
            limits,
            check: Box::pin(tokio::time::sleep(limits.handshake)),
        }
    }

    /// Whether the connection must close now; otherwise the task is woken
    /// at the next moment it might.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Looked at on every wake-up: a call that ended may have brought
        // the deadline forward (the idle limit is shorter than the
        // handshake one, say), and so may the router stopping (both wake
        // the waker registered here first). A later deadline waits for the
        // timer.
        self.state.register(cx.waker());
        let stopped_at = self.state.stopping.get().copied();
        // Nothing to look at before the armed timer fires, unless the
        // deadline came sooner (a call ended; the router is stopping). The
        // timer keeps this task's waker from its last poll, so looking
        // would only read the clock, on every read and write of every call.
        if stopped_at.is_none() && !self.check.is_elapsed() && !self.state.take_recheck() {
            return false;
        }
        loop {
            let now = Instant::now();
            let Some(at) = self.state.next_check(now, self.limits, stopped_at) else {
                debug!(peer = %self.peer, stopping = stopped_at.is_some(), "closing connection without calls");
                return true;
            };
            if at < self.check.deadline() || self.check.is_elapsed() {
                self.check.as_mut().reset(at);
            }
            self.state.arm(self.check.deadline());
            if self.check.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    fn closed<T>() -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection closed: no calls within the idle or handshake timeout, or shutting down",
        )))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let mut by_peer = self.connections.lock();
        if by_peer
            .get(&self.peer)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            by_peer.remove(&self.peer);
        }
    }
}

/// What a [`Guarded`] connection hands each request it carries: its
/// addresses, and its [`ConnState`] for the call layer to count calls in.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub state: Arc<ConnState>,
}

impl Connected for Guarded {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.socket.connect_info(),
            state: Arc::clone(&self.state),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_read(cx, buf) {
            Poll::Pending if this.expired(cx) => Self::closed(),
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_write(cx, data) {
            Poll::Pending if this.expired(cx) => Self::closed(),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Self::closed(),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_write_vectored(cx, bufs) {
            Poll::Pending if this.expired(cx) => Self::closed(),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Timeouts = Timeouts {
        handshake: Duration::from_secs(2),
        idle: Duration::from_secs(10),
    };
    const TICK: Duration = Duration::from_millis(1);

    /// A waker that counts its wakes.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_last_call_ending_wakes_the_connection_only_when_its_deadline_comes_sooner() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let woken = || wakes.0.load(Ordering::SeqCst);
        let stopping: Arc<OnceLock<Instant>> = Arc::default();

        // Idle limit (10 s) past the armed handshake timer (2 s): the timer
        // fires first and the deadline is looked at then.
        let state = ConnState::new(LIMITS, Arc::clone(&stopping));
        state.register(&waker);
        state.begin();
        state.answered();
        state.closed();
        assert_eq!(woken(), 0);

        // An idle limit shorter than the handshake one: woken to re-arm.
        let short = Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(2),
        };
        let state = ConnState::new(short, Arc::clone(&stopping));
        state.register(&waker);
        state.begin();
        state.answered();
        assert_eq!(woken(), 0, "a handler answering matters only when stopping");
        state.closed();
        assert_eq!(woken(), 1);

        // Stopping: the last handler answering is enough.
        let state = ConnState::new(LIMITS, Arc::clone(&stopping));
        state.register(&waker);
        state.begin();
        stopping.set(Instant::now()).unwrap();
        state.answered();
        assert_eq!(woken(), 2);
    }

    #[tokio::test]
    async fn a_silent_connection_closes_after_the_handshake_timeout() {
        let state = ConnState::new(LIMITS, Arc::default());
        let t0 = state.last_change();
        assert_eq!(
            state.next_check(t0, LIMITS, None),
            Some(t0 + LIMITS.handshake)
        );
        assert_eq!(state.next_check(t0 + LIMITS.handshake, LIMITS, None), None);
    }

    #[tokio::test]
    async fn open_calls_hold_a_connection_and_the_idle_clock_starts_at_the_last() {
        let state = ConnState::new(LIMITS, Arc::default());
        state.begin();
        let later = state.last_change() + Duration::from_secs(60);
        assert_eq!(
            state.next_check(later, LIMITS, None),
            Some(later + LIMITS.idle)
        );
        state.answered();
        // Answered but still streaming: still held.
        assert_eq!(
            state.next_check(later, LIMITS, None),
            Some(later + LIMITS.idle)
        );
        state.closed();
        let ended = state.last_change();
        assert_eq!(
            state.next_check(ended + TICK, LIMITS, None),
            Some(ended + LIMITS.idle)
        );
        assert_eq!(state.next_check(ended + LIMITS.idle, LIMITS, None), None);
    }

    #[tokio::test]
    async fn after_stop_only_running_handlers_hold_a_connection() {
        let state = ConnState::new(LIMITS, Arc::default());
        state.begin();
        state.answered(); // a stream: answered, still open
        let stop = state.last_change() + TICK;
        assert_eq!(
            state.next_check(stop, LIMITS, Some(stop)),
            Some(stop + FLUSH_AFTER_STOP)
        );
        assert_eq!(
            state.next_check(stop + FLUSH_AFTER_STOP, LIMITS, Some(stop)),
            None
        );
        state.begin(); // a decision still running
        let late = stop + Duration::from_secs(5);
        assert_eq!(
            state.next_check(late, LIMITS, Some(stop)),
            Some(late + FLUSH_AFTER_STOP)
        );
    }
}
