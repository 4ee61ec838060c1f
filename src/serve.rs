//! The HTTP endpoints of `run` (contract §5): `/metrics`, `/healthz` and
//! `/readyz`, on a single-threaded tokio runtime of their own.
//!
//! It only reads: the registry ([`Telemetry`]) and the [`StatusBoard`].
//! Clients cannot hurt the daemon nor lock others out: request headers
//! must arrive within 5 s (an idle keep-alive connection is closed after
//! as long), a connection lives at most 60 s, a request head may not pass
//! 16 KiB (431 beyond), and past [`MAX_CONNECTIONS`] the oldest connection
//! is closed to make room, so slow or idle clients, however many, never
//! keep the probes and Prometheus from a fresh connection. Anything but
//! GET/HEAD of the three paths gets a 404 or 405. `/readyz` gives its
//! reasons (file paths, offsets, details) only to clients on loopback.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, watch};

use crate::telemetry::{readiness, Detail, StatusBoard, Telemetry};

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once; a new one past this closes the oldest.
pub const MAX_CONNECTIONS: usize = 1024;
/// Bytes a connection may buffer: a request head larger than this is
/// answered 431 (hyper's minimum is 8 KiB).
const MAX_REQUEST_BUFFER: usize = 16 * 1024;

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub telemetry: Telemetry,
    pub board: StatusBoard,
    pub ready_max_lag_events: u64,
    /// (v1.2) The latest checkpoint of each ledger, for `/tlog/<ledger>/checkpoint`.
    pub checkpoints: crate::tlog::publish::Served,
}

/// Serves on `listener` until `shutdown` turns true. Blocks the calling
/// thread (it runs its own runtime).
pub fn serve(
    listener: std::net::TcpListener,
    endpoints: Endpoints,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let endpoints = Arc::new(endpoints);
        // Open connections, oldest first: each holds the sender whose drop
        // closes it; a connection that ends reports its number on `ended`.
        let mut open: VecDeque<(u64, oneshot::Sender<()>)> = VecDeque::new();
        let (ended_tx, mut ended) = mpsc::unbounded_channel::<u64>();
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                Some(id) = ended.recv() => {
                    if let Some(i) = open.iter().position(|(n, _)| *n == id) {
                        open.remove(i);
                    }
                }
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: pause, go on.
                            tracing::warn!(error = %e, "metrics server: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    while let Ok(id) = ended.try_recv() {
                        if let Some(i) = open.iter().position(|(n, _)| *n == id) {
                            open.remove(i);
                        }
                    }
                    if open.len() >= MAX_CONNECTIONS {
                        // Dropping its sender closes the oldest connection.
                        open.pop_front();
                    }
                    let (close, closed) = oneshot::channel();
                    let id = next_id;
                    next_id += 1;
                    open.push_back((id, close));
                    tokio::spawn(connection(stream, peer, endpoints.clone(), closed, id, ended_tx.clone()));
                }
            }
        }
    })
}

/// Serves one client until it is done, its time is up, or it is closed
/// to make room.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    endpoints: Arc<Endpoints>,
    closed: oneshot::Receiver<()>,
    id: u64,
    ended: mpsc::UnboundedSender<u64>,
) {
    let detail = if peer.ip().to_canonical().is_loopback() {
        Detail::Full
    } else {
        Detail::Brief
    };
    let service = service_fn(move |req| {
        let endpoints = endpoints.clone();
        async move { Ok::<_, Infallible>(respond(&endpoints, &req, detail)) }
    });
    let serving = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BUFFER)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        _ = closed => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
    }
    let _ = ended.send(id);
}

fn respond(
    endpoints: &Endpoints,
    req: &Request<Incoming>,
    detail: Detail,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(ledger) = path
        .strip_prefix("/tlog/")
        .and_then(|p| p.strip_suffix("/checkpoint"))
    {
        return checkpoint(endpoints, req, ledger);
    }
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, endpoints.telemetry.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        _ => match readiness(
            &endpoints.board.snapshot(),
            endpoints.ready_max_lag_events,
            detail,
        ) {
            Ok(notes) if notes.is_empty() => text(StatusCode::OK, "ready\n".into()),
            Ok(notes) => text(StatusCode::OK, format!("ready\n{notes}\n")),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready:\n{why}\n"),
            ),
        },
    }
}

/// `GET /tlog/<ledger>/checkpoint`: the latest signed checkpoint with its
/// cosignatures (contract §7); the name as in the config, percent-encoded
/// where a URL needs it.
fn checkpoint(
    endpoints: &Endpoints,
    req: &Request<Incoming>,
    ledger: &str,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    let name = percent_decode(ledger);
    let served = endpoints
        .checkpoints
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match name.as_deref().and_then(|n| served.get(n)) {
        Some(note) => text(StatusCode::OK, note.clone()),
        None => text(
            StatusCode::NOT_FOUND,
            "no signed checkpoint for this ledger (is [tlog] configured, and has it mirrored an event?)\n".into(),
        ),
    }
}

/// `%XX` escapes decoded; `None` when they do not make UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
