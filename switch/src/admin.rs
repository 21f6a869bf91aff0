//! Admin HTTP: `/metrics`, `/healthz`, `/readyz`, `/links`, `/reversals`
//! (queues and the manual queue of parked reversals), `/journal`.
//!
//! A tiny hand-rolled HTTP/1.1 server (GET only, one request per
//! connection, `Connection: close`) rather than hyper: four read-only
//! endpoints do not justify an HTTP stack's dependencies, and every limit
//! (head size, read time, concurrent connections) is ours and explicit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::pipeline::Pipeline;

/// Largest request head read.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most admin connections served at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The admin server.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    metrics: PrometheusHandle,
}

impl Admin {
    /// Serve on an already-bound listener.
    pub fn new(listener: TcpListener, metrics: PrometheusHandle) -> Self {
        Admin { listener, metrics }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` turns true.
    pub async fn serve(self, pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
        let state = Arc::new((pipeline, self.metrics));
        while !*shutdown.borrow() {
            let (stream, _) = tokio::select! {
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = serve_one(stream, &state.0, &state.1).await;
            });
        }
    }
}

async fn serve_one(
    mut stream: TcpStream,
    pipeline: &Pipeline,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || head.len() + n > MAX_REQUEST_HEAD_BYTES {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return respond(&mut stream, 405, "text/plain", "GET only\n").await;
    }
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match path {
        b"/metrics" => {
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            metrics::gauge!(crate::metrics::RUNTIME_TASKS).set(tasks as f64);
            let body = metrics.render();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        b"/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        b"/readyz" => {
            let not_ready: Vec<&str> = pipeline
                .pools()
                .filter(|p| !p.is_ready())
                .map(|p| p.name())
                .collect();
            if not_ready.is_empty() {
                respond(&mut stream, 200, "text/plain", "ready\n").await
            } else {
                let body = format!("not ready: no link up to {}\n", not_ready.join(", "));
                respond(&mut stream, 503, "text/plain", &body).await
            }
        }
        b"/links" => {
            let mut pools: Vec<_> = pipeline.pools().map(|p| p.status()).collect();
            pools.sort_by(|a, b| a.code.cmp(&b.code));
            let body = serde_json::to_string_pretty(&pools).unwrap_or_else(|_| "[]".into());
            respond(&mut stream, 200, "application/json", &body).await
        }
        b"/reversals" => {
            let status = pipeline.reversals().status();
            let body = serde_json::to_string_pretty(&status).unwrap_or_else(|_| "{}".into());
            respond(&mut stream, 200, "application/json", &body).await
        }
        b"/journal" => {
            let safety = pipeline.safety();
            let body = serde_json::json!({
                "healthy": safety.healthy(),
                "segments": safety.journal().segments().len(),
            })
            .to_string();
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
