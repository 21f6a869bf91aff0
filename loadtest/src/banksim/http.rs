//! `GET /ledger` and `GET /healthz`: a tiny hand-rolled HTTP/1.1 server
//! (GET only, one request per connection, `Connection: close`), like the
//! switch's admin server: two read-only endpoints do not justify an HTTP
//! stack, and every limit is explicit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::client::Client;
use super::ledger::Ledger;
use super::server::{lock, Bank};

/// Longest outage `POST /banks/NAME/restart?down_ms=N` takes.
const MAX_DOWN_MS: u64 = 60_000;

/// Largest request head read.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most HTTP connections served at once.
const MAX_HTTP_CONNECTIONS: usize = 32;

/// Serve until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    ledger: Arc<Mutex<Ledger>>,
    banks: Vec<Arc<Bank>>,
    clients: Vec<Arc<Client>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let banks = Arc::new(banks);
    let clients = Arc::new(clients);
    let limit = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    while !*shutdown.borrow() {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
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
        let ledger = ledger.clone();
        let banks = banks.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ =
                tokio::time::timeout(WRITE_TIMEOUT, serve_one(stream, &ledger, &banks, &clients))
                    .await;
        });
    }
}

async fn serve_one(
    mut stream: TcpStream,
    ledger: &Mutex<Ledger>,
    banks: &[Arc<Bank>],
    clients: &[Arc<Client>],
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
    let mut target = target.splitn(2, |b| *b == b'?');
    let path = target.next().unwrap_or_default();
    let query = target.next().unwrap_or_default();
    if method == b"POST" {
        return restart(&mut stream, banks, path, query).await;
    }
    if method != b"GET" {
        return respond(
            &mut stream,
            405,
            "text/plain",
            "GET, or POST /banks/NAME/restart\n",
        )
        .await;
    }
    match path {
        b"/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        b"/client" => {
            let body = clients_json(clients);
            respond(&mut stream, 200, "application/json", &body).await
        }
        b"/ledger" => {
            let summary = query
                .split(|b| *b == b'&')
                .any(|p| p == b"summary" || p == b"summary=1" || p == b"summary=true");
            let body = lock(ledger).to_json(summary);
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

/// `POST /banks/NAME/restart?down_ms=N` (default 1000, at most 60000):
/// drop the bank's connections and close its port for N ms.
async fn restart(
    stream: &mut TcpStream,
    banks: &[Arc<Bank>],
    path: &[u8],
    query: &[u8],
) -> std::io::Result<()> {
    let name = path
        .strip_prefix(b"/banks/")
        .and_then(|p| p.strip_suffix(b"/restart"));
    let Some(bank) = name.and_then(|n| banks.iter().find(|b| b.name.as_bytes() == n)) else {
        return respond(
            stream,
            404,
            "text/plain",
            "no such bank: POST /banks/NAME/restart\n",
        )
        .await;
    };
    let mut down_ms = 1_000;
    for p in query.split(|b| *b == b'&') {
        if let Some(v) = p.strip_prefix(b"down_ms=") {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(ms) if ms <= MAX_DOWN_MS => down_ms = ms,
                _ => {
                    return respond(
                        stream,
                        400,
                        "text/plain",
                        "down_ms: a whole number of milliseconds, at most 60000\n",
                    )
                    .await
                }
            }
        }
    }
    bank.restart(Duration::from_millis(down_ms));
    respond(stream, 200, "text/plain", "restarting\n").await
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
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `GET /client`: each client-mode bank's counts, by bank name.
pub(super) fn clients_json(clients: &[Arc<Client>]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = clients
        .iter()
        .map(|c| {
            let counts = serde_json::to_value(c.counts()).unwrap_or_default();
            (c.name().to_owned(), counts)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}
