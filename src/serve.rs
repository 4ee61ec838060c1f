//! The HTTP endpoints of `run` (contract §5): `/metrics`, `/healthz` and
//! `/readyz`, on a single-threaded tokio runtime of their own.
//!
//! It only reads: the registry ([`Telemetry`]) and the [`StatusBoard`].
//! Clients cannot hurt the daemon: headers must arrive within 5 s, a
//! connection lives at most 60 s, at most 64 are served at once (more are
//! closed at once), and anything but GET/HEAD of the three paths gets a
//! 404 or 405.

use std::convert::Infallible;
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
use tokio::sync::{watch, Semaphore};

use crate::telemetry::{readiness, StatusBoard, Telemetry};

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 64;

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub telemetry: Telemetry,
    pub board: StatusBoard,
    pub ready_max_lag_events: u64,
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
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let endpoints = Arc::new(endpoints);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors and the like: pause, go on.
                            tracing::warn!(error = %e, "metrics server: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        continue; // too many clients: this one is closed
                    };
                    let endpoints = endpoints.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let endpoints = endpoints.clone();
                            async move { Ok::<_, Infallible>(respond(&endpoints, &req)) }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                        drop(slot);
                    });
                }
            }
        }
    })
}

fn respond(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
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
        _ => match readiness(&endpoints.board.snapshot(), endpoints.ready_max_lag_events) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready:\n{why}\n"),
            ),
        },
    }
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
