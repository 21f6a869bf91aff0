//! The open-loop load run: each connection has its own share of the
//! schedule, a writer that sends each request at its intended time and a
//! reader that matches answers on (F11, F37) and records latency from the
//! intended send time. Every request must get exactly one answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::report::{Recorder, Report};
use crate::schedule::OpenLoop;
use anyhow::{bail, Context};
use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most requests one connection keeps waiting for an answer.
const MAX_PENDING_PER_CONNECTION: usize = 100_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The switch's upstream listener (plaintext).
    pub target: SocketAddr,
    /// Requests per second over all connections.
    pub rate: u64,
    /// Length of the run.
    pub duration: Duration,
    /// Upstream connections.
    pub connections: u64,
    /// Destination banks, used round-robin.
    pub banks: Vec<BankCode>,
    /// How long to wait for the last answers.
    pub drain: Duration,
}

/// Parse the destination bank list.
pub fn parse_banks(banks: &[String]) -> anyhow::Result<Vec<BankCode>> {
    if banks.is_empty() {
        bail!("--banks: at least one bank code is needed");
    }
    banks
        .iter()
        .map(|b| BankCode::parse(b.as_bytes()).map_err(|e| anyhow::anyhow!("--banks: {e}")))
        .collect()
}

/// Run the plan and return the merged report.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let per_conn_rate = (plan.rate / plan.connections).max(1);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for conn in 0..plan.connections {
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            connection(plan, conn, per_conn_rate, start).await
        }));
    }
    let mut total = Recorder::new();
    let mut offered = 0;
    for t in tasks {
        let (rec, sent) = t.await.context("load task")??;
        total.merge(&rec);
        offered += sent;
    }
    let offered_tps = (per_conn_rate * plan.connections) as f64;
    Ok(total.report(offered, offered_tps, start.elapsed()))
}

type Pending = Arc<Mutex<HashMap<(u32, [u8; 12]), (Instant, BankCode)>>>;

async fn connection(
    plan: Plan,
    conn: u64,
    rate: u64,
    start: Instant,
) -> anyhow::Result<(Recorder, u64)> {
    let stream = TcpStream::connect(plan.target)
        .await
        .with_context(|| format!("connecting to {}", plan.target))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let codec = Iso8583Codec::builtin("canonical").context("canonical dialect")?;
    let framer = Framer::new(FrameConfig::default())?;
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let mut schedule = OpenLoop::new(rate, plan.duration).context("rate must be positive")?;

    let reader_pending = pending.clone();
    let reader_codec = codec.clone();
    let total = schedule.total();
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    let reader_rec = recorder.clone();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut answered = 0u64;
        while answered < total {
            while let Some(frame) = framer.decode(&mut buf)? {
                match reader_codec.decode(&frame.message) {
                    Ok(resp) => {
                        let key = match (resp.stan, resp.rrn) {
                            (Some(s), Some(r)) => (s.value(), rrn_bytes(&r)),
                            _ => {
                                lock(&reader_rec)?.error("unmatched");
                                continue;
                            }
                        };
                        let found = lock(&reader_pending)?.remove(&key);
                        match (found, resp.response_code) {
                            (Some((sent_at, bank)), Some(code)) => {
                                answered += 1;
                                lock(&reader_rec)?.answer(
                                    sent_at.elapsed(),
                                    code.as_str(),
                                    bank.as_str(),
                                );
                            }
                            (Some(_), None) => lock(&reader_rec)?.error("no_response_code"),
                            (None, _) => lock(&reader_rec)?.error("unmatched_or_duplicate"),
                        }
                    }
                    Err(_) => lock(&reader_rec)?.error("undecodable_answer"),
                }
            }
            // Check before reading: the peer keeps the link open after the last answer.
            if answered >= total || rd.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        anyhow::Ok(())
    });

    let mut out = BytesMut::with_capacity(64 * 1024);
    let conn_start = start;
    while !schedule.finished() {
        let elapsed = conn_start.elapsed();
        if let Some(wait) = schedule.until_next(elapsed) {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let due = schedule.due(conn_start.elapsed());
        for seq in due {
            let intended = conn_start + schedule.intended(seq);
            let bank = plan.banks[(seq as usize) % plan.banks.len()];
            let txn = request(conn, seq, bank)?;
            let key = (
                txn.stan.map_or(0, |s| s.value()),
                txn.rrn.as_ref().map(rrn_bytes).unwrap_or_default(),
            );
            {
                let mut p = lock(&pending)?;
                if p.len() >= MAX_PENDING_PER_CONNECTION {
                    bail!("more than {MAX_PENDING_PER_CONNECTION} requests unanswered on one connection");
                }
                p.insert(key, (intended, bank));
            }
            let mark = framer.begin(&[], &mut out)?;
            codec.encode(&txn, &mut out)?;
            framer.finish(mark, &mut out)?;
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    let sent = schedule.released();
    // Wait for the last answers; what has not come by the drain deadline is a timeout.
    let abort = reader.abort_handle();
    match tokio::time::timeout(plan.drain, reader).await {
        Ok(r) => r.context("reader task")??,
        Err(_) => abort.abort(),
    }
    let mut rec = std::mem::take(&mut *lock(&recorder)?);
    let unanswered = lock(&pending)?.len();
    for _ in 0..unanswered {
        rec.error("timeout");
    }
    Ok((rec, sent))
}

/// Lock a mutex shared between a connection's writer and reader.
fn lock<T>(m: &Mutex<T>) -> anyhow::Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| anyhow::anyhow!("a load task panicked"))
}

fn rrn_bytes(r: &Rrn) -> [u8; 12] {
    let mut out = [b' '; 12];
    out.copy_from_slice(r.as_str().as_bytes());
    out
}

/// The canonical 0200 credit transfer for request `seq` of connection `conn`.
/// STAN and RRN are unique per connection over a run of under a million.
fn request(conn: u64, seq: u64, bank: BankCode) -> anyhow::Result<Transaction> {
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = Some(AmountMinor::new(100 + seq % 100_000)?);
    t.transmitted_at = Some(TransmissionDateTime::parse(b"1123120000")?);
    t.stan = Some(Stan::new((seq % 999_999) as u32 + 1)?);
    t.local_time = Some(LocalTime::parse(b"200000")?);
    t.local_date = Some(LocalDate::parse(b"1123")?);
    t.acquirer = Some(InstitutionId::parse(b"888001")?);
    t.rrn = Some(Rrn::parse(
        format!("{:02}{:010}", conn % 100, seq).as_bytes(),
    )?);
    t.terminal_id = Some(TerminalId::parse(
        format!("LOAD{:04}", conn % 10_000).as_bytes(),
    )?);
    t.merchant_id = Some(MerchantId::parse(b"LOADTEST0000001")?);
    t.currency = Some(Currency::HKD);
    t.receiving_bank = Some(bank);
    t.debtor_account = Some(Account::parse(
        format!("{:012}", 100_000_000 + seq % 1000).as_bytes(),
    )?);
    t.creditor_account = Some(Account::parse(
        format!("{:012}", 200_000_000 + seq % 1000).as_bytes(),
    )?);
    t.idempotency_key = Some(IdempotencyKey::parse(
        format!("load-{conn}-{seq}").as_bytes(),
    )?);
    Ok(t)
}
