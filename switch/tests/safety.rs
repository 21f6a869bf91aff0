//! Payment safety against a running switch (DESIGN.md invariants 1-4 and
//! 6): idempotent retries, duplicates in flight, 94 on a reused key,
//! reversals of unknown outcomes (F90, acknowledgement, parking), late
//! answers, upstream 0400s, and the same with the file journal on.
//!
//! Every switch in this binary shares one metrics recorder (it is
//! process-wide), so each test names its banks uniquely and reads only
//! series labelled with its own bank names.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fps_codecs::model::*;
use support::*;

/// Longest any polled condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// Bank deadline where a test wants the switch to give up quickly.
const SHORT_TIMEOUT_MS: u64 = 250;

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_a_completed_key_gets_the_original_answer_without_the_bank() {
    let pki = Pki::new();
    let peer = approving_bank(&pki).await;
    let sw = start(&pki, &[spec("003", "idem_retry", &peer, 3_000)], "").await;
    let mut gw = gateway(&sw, &pki).await;

    let first = keyed(1, "003", "retry-key-1");
    let original = gw.request(&first).await;
    assert_eq!(original.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(auth(&original), Some("AUTH01".to_owned()));

    let retry = retry_of(&first, 2);
    let again = gw.request(&retry).await;
    assert_eq!(again.response_code, original.response_code, "F39");
    assert_eq!(auth(&again), auth(&original), "F38");
    assert_echoes(&retry, &again);
    assert_eq!(again.amount, first.amount);

    assert_eq!(bank_requests(&peer), 1, "the bank saw the transfer once");
    assert!(sw.stop().await, "drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_with_other_content_is_answered_94_without_the_bank() {
    let pki = Pki::new();
    let peer = approving_bank(&pki).await;
    let sw = start(&pki, &[spec("003", "idem_mismatch", &peer, 3_000)], "").await;
    let mut gw = gateway(&sw, &pki).await;

    let first = keyed(1, "003", "mismatch-key");
    let original = gw.request(&first).await;
    assert_eq!(original.response_code, Some(ResponseCode::APPROVED));

    let mut other_amount = retry_of(&first, 2);
    other_amount.amount = Some(AmountMinor::new(99_999).unwrap());
    let a = gw.request(&other_amount).await;
    assert_eq!(a.response_code, Some(ResponseCode::DUPLICATE), "amount");
    assert_echoes(&other_amount, &a);
    assert_eq!(a.auth_id, None, "a 94 carries no authorisation");

    let mut other_bank = retry_of(&first, 3);
    other_bank.receiving_bank = Some(BankCode::parse(b"004").unwrap());
    let a = gw.request(&other_bank).await;
    assert_eq!(
        a.response_code,
        Some(ResponseCode::DUPLICATE),
        "destination"
    );

    let mut other_creditor = retry_of(&first, 4);
    other_creditor.creditor_account = Some(Account::parse(b"111122223333").unwrap());
    let a = gw.request(&other_creditor).await;
    assert_eq!(a.response_code, Some(ResponseCode::DUPLICATE), "creditor");

    // The mismatches did not disturb the key: a true retry still gets the
    // original answer.
    let retry = retry_of(&first, 5);
    let a = gw.request(&retry).await;
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(auth(&a), auth(&original));
    assert_echoes(&retry, &a);

    assert_eq!(bank_requests(&peer), 1, "the bank saw the transfer once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_of_a_key_in_flight_share_the_one_bank_answer() {
    let pki = Pki::new();
    // Slow but in time: the answer comes 1 s after the request, well inside
    // the 5 s deadline.
    let peer = canonical_peer(
        &pki,
        Behaviour::Late {
            delay_ms: 1_000,
            code: b"00",
        },
        ReversalBehaviour::Acknowledge,
    )
    .await;
    let sw = start(&pki, &[spec("003", "idem_inflight", &peer, 5_000)], "").await;
    let mut gw = gateway(&sw, &pki).await;
    // A second connection of the same client (same certificate, same scope).
    let mut gw2 = gateway(&sw, &pki).await;

    let first = keyed(1, "003", "in-flight-key");
    let dup_same_conn = retry_of(&first, 2);
    let dup_other_conn = retry_of(&first, 3);
    gw.send(&first).await;
    // The duplicates go once the original is at the bank, i.e. in flight.
    eventually("the original reaches the bank", || async {
        bank_requests(&peer) == 1
    })
    .await;
    gw.send(&dup_same_conn).await;
    gw2.send(&dup_other_conn).await;

    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(gw.recv().await.expect("an answer on the first connection"));
    }
    let other = gw2
        .recv()
        .await
        .expect("an answer on the second connection");
    answers.sort_by_key(|a| a.stan.map(|s| s.value()));
    assert_echoes(&first, &answers[0]);
    assert_echoes(&dup_same_conn, &answers[1]);
    assert_echoes(&dup_other_conn, &other);
    for a in answers.iter().chain([&other]) {
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
        assert_eq!(auth(a), Some("AUTH01".to_owned()));
    }
    assert_eq!(bank_requests(&peer), 1, "the bank saw the transfer once");
    // They waited for the original rather than finding it completed (no
    // other test in this binary has a duplicate in flight).
    let in_flight = metric_of(
        &metrics(sw.admin).await,
        "fps_switch_idempotency_total",
        &[("result", "in_flight")],
    );
    assert!(in_flight >= Some(2.0), "in-flight claims: {in_flight:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_bank_gets_68_upstream_and_a_reversal_naming_the_original() {
    let pki = Pki::new();
    let peer = silent_bank(&pki, ReversalBehaviour::Acknowledge).await;
    let sw = start(
        &pki,
        &[spec("003", "rev_silent", &peer, SHORT_TIMEOUT_MS)],
        "",
    )
    .await;
    unknown_outcome_is_reversed(&sw, &pki, &peer, ("003", "rev_silent")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reversal_is_parked_and_does_not_block_the_queue() {
    let pki = Pki::new();
    let peer = silent_bank(&pki, ReversalBehaviour::Refuse).await;
    let sw = start(
        &pki,
        &[spec("003", "rev_refused", &peer, SHORT_TIMEOUT_MS)],
        "[reversal]\nmax_attempts = 2\nbase_backoff_ms = 50\nmax_backoff_ms = 100\n",
    )
    .await;
    let mut gw = gateway(&sw, &pki).await;

    let a = gw.request(&keyed(1, "003", "park-a")).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE));
    wait_metric(
        sw.admin,
        "fps_switch_reversals_parked",
        &[("bank", "rev_refused")],
        1.0,
    )
    .await;
    let sent_a = bank_request(&peer, 0);
    let for_a = reversals_naming(&peer, &sent_a);
    assert_eq!(
        for_a.iter().map(|r| r.mti).collect::<Vec<_>>(),
        [Mti::REVERSAL, Mti::REVERSAL.repeat()],
        "0400, then one repeat (max_attempts = 2), then parked"
    );
    let status = reversals_json(sw.admin).await;
    let bank = queue_of(&status, "rev_refused");
    assert_eq!(bank["queued"], 1, "{status}");
    assert_eq!(bank["parked"], 1, "{status}");
    let parked = status["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["bank"], "rev_refused");
    assert_eq!(parked[0]["mti"], "0200");
    assert_eq!(
        parked[0]["stan"].as_u64(),
        sent_a.stan.map(|s| u64::from(s.value())),
        "the parked item names the STAN the bank saw"
    );
    assert_eq!(parked[0]["amount_minor"], 12_345);
    assert_eq!(
        metric_of(
            &metrics(sw.admin).await,
            "fps_switch_reversals_total",
            &[("bank", "rev_refused"), ("result", "parked")]
        ),
        Some(1.0)
    );

    // A parked item does not hold up the next one: its reversal is tried
    // (and, refused too, parked in its turn).
    let b = gw.request(&keyed(2, "003", "park-b")).await;
    assert_eq!(b.response_code, Some(ResponseCode::LATE));
    wait_metric(
        sw.admin,
        "fps_switch_reversals_parked",
        &[("bank", "rev_refused")],
        2.0,
    )
    .await;
    let sent_b = bank_request(&peer, 1);
    assert_eq!(reversals_naming(&peer, &sent_b).len(), 2);
    assert_eq!(
        reversals_naming(&peer, &sent_a).len(),
        2,
        "a parked item is not retried by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_approval_is_never_forwarded_and_the_reversal_still_goes() {
    let pki = Pki::new();
    let peer = canonical_peer(
        &pki,
        Behaviour::Late {
            delay_ms: 800,
            code: b"00",
        },
        ReversalBehaviour::Acknowledge,
    )
    .await;
    let sw = start(&pki, &[spec("003", "late_ok", &peer, SHORT_TIMEOUT_MS)], "").await;
    let mut gw = gateway(&sw, &pki).await;

    let req = keyed(1, "003", "late-approved");
    let a = gw.request(&req).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE));
    assert_echoes(&req, &a);
    wait_metric(
        sw.admin,
        "fps_switch_bank_late_responses_total",
        &[("bank", "late_ok")],
        1.0,
    )
    .await;
    // The late approval has been handled; had it gone upstream it would
    // be queued before the answer to this echo.
    assert_next_is_echo(&mut gw, 900_001).await;

    // The bank acknowledged the reversal before its late approval came: it
    // may have executed the original after the reversal found nothing, so
    // the late approval re-opens the reversal (a second 0400, harmless if
    // the first one took effect).
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "late_ok"), ("result", "reopened")],
        1.0,
    )
    .await;
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "late_ok"), ("result", "acknowledged")],
        2.0,
    )
    .await;
    let sent = bank_request(&peer, 0);
    let reversals = reversals_naming(&peer, &sent);
    assert_eq!(reversals.first().map(|r| r.mti), Some(Mti::REVERSAL));
    let second = reversals
        .iter()
        .skip(1)
        .position(|r| r.mti == Mti::REVERSAL)
        .map(|p| p + 1)
        .expect("a second reversal after the late approval");
    assert_reversal_attempts(&reversals[..second]);
    assert_reversal_attempts(&reversals[second..]);
    // A retry of the key still gets the 68, never the late approval.
    let retry = retry_of(&req, 2);
    let a = gw.request(&retry).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE));
    assert_eq!(a.auth_id, None);
    assert_eq!(bank_requests(&peer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_decline_closes_the_reversal_as_nothing_to_reverse() {
    let pki = Pki::new();
    // The bank refuses the first reversal, so the item is still queued
    // (waiting out a long backoff) when the late decline arrives.
    let peer = canonical_peer(
        &pki,
        Behaviour::Late {
            delay_ms: 800,
            code: b"51",
        },
        ReversalBehaviour::Refuse,
    )
    .await;
    let sw = start(
        &pki,
        &[spec("003", "late_declined", &peer, SHORT_TIMEOUT_MS)],
        "[reversal]\nmax_attempts = 6\nbase_backoff_ms = 20000\nmax_backoff_ms = 20000\n",
    )
    .await;
    let mut gw = gateway(&sw, &pki).await;

    let req = keyed(1, "003", "late-declined");
    let a = gw.request(&req).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE));
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "late_declined"), ("result", "retry")],
        1.0,
    )
    .await;
    wait_metric(
        sw.admin,
        "fps_switch_bank_late_responses_total",
        &[("bank", "late_declined")],
        1.0,
    )
    .await;
    eventually("the late decline empties the queue", || async {
        queue_of(&reversals_json(sw.admin).await, "late_declined")["queued"] == 0
    })
    .await;
    let status = reversals_json(sw.admin).await;
    assert_eq!(queue_of(&status, "late_declined")["parked"], 0, "{status}");
    assert_eq!(
        metric_of(
            &metrics(sw.admin).await,
            "fps_switch_reversals_total",
            &[("bank", "late_declined"), ("result", "nothing_to_reverse")]
        ),
        Some(1.0),
        "the settlement is counted"
    );
    let sent = bank_request(&peer, 0);
    assert_eq!(
        reversals_naming(&peer, &sent).len(),
        1,
        "only the first, refused attempt"
    );
    assert_next_is_echo(&mut gw, 900_002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reversal_of_an_approved_transfer_reaches_the_bank_once() {
    let pki = Pki::new();
    let peer = approving_bank(&pki).await;
    let sw = start(&pki, &[spec("003", "up_rev", &peer, 3_000)], "").await;
    let mut gw = gateway(&sw, &pki).await;

    let original = keyed(1, "003", "up-rev-1");
    assert_eq!(
        gw.request(&original).await.response_code,
        Some(ResponseCode::APPROVED)
    );
    let rev = upstream_reversal_of(&original, 2);
    let a = gw.request(&rev).await;
    assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    assert_echoes(&rev, &a);
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "up_rev"), ("result", "acknowledged")],
        1.0,
    )
    .await;
    let sent = bank_request(&peer, 0);
    let at_bank = reversals_naming(&peer, &sent);
    assert_eq!(at_bank.len(), 1);
    assert_eq!(at_bank[0].mti, Mti::REVERSAL);
    assert_eq!(at_bank[0].amount, sent.amount);

    // The same 0400 again (the gateway did not see the 0410): same answer,
    // nothing more to the bank.
    let a = gw.request(&rev).await;
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    assert_echoes(&rev, &a);
    // A second transfer reversed the same way: once its reversal is
    // acknowledged, anything the repeat had queued (due earlier) is out too.
    let second = keyed(3, "003", "up-rev-2");
    assert_eq!(
        gw.request(&second).await.response_code,
        Some(ResponseCode::APPROVED)
    );
    let a = gw.request(&upstream_reversal_of(&second, 4)).await;
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "up_rev"), ("result", "acknowledged")],
        2.0,
    )
    .await;
    assert_eq!(reversals_naming(&peer, &sent).len(), 1, "first: once");
    assert_eq!(reversals_naming(&peer, &bank_request(&peer, 1)).len(), 1);
    assert_eq!(peer.reversals.lock().unwrap().len(), 2);
    assert_eq!(bank_requests(&peer), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reversal_of_an_unknown_original_is_answered_25() {
    let pki = Pki::new();
    let peer = approving_bank(&pki).await;
    let sw = start(&pki, &[spec("003", "up_rev_unknown", &peer, 3_000)], "").await;
    let mut gw = gateway(&sw, &pki).await;

    // Never sent.
    let ghost = keyed(1, "003", "never-sent");
    let rev = upstream_reversal_of(&ghost, 2);
    let a = gw.request(&rev).await;
    assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
    assert_eq!(a.response_code, Some(ResponseCode::ORIGINAL_NOT_FOUND));
    assert_echoes(&rev, &a);

    // Sent and approved, but F90 names another STAN.
    let real = keyed(3, "003", "sent");
    assert_eq!(
        gw.request(&real).await.response_code,
        Some(ResponseCode::APPROVED)
    );
    let mut wrong = upstream_reversal_of(&real, 4);
    let mut od = wrong.original.unwrap();
    od.stan = Stan::new(999_999).unwrap();
    wrong.original = Some(od);
    let a = gw.request(&wrong).await;
    assert_eq!(a.response_code, Some(ResponseCode::ORIGINAL_NOT_FOUND));

    // A reversal advice (0420) of an unknown original: 25 as well.
    let mut advice = upstream_reversal_of(&ghost, 5);
    advice.mti = Mti::REVERSAL_ADVICE;
    let a = gw.request(&advice).await;
    assert_eq!(a.mti, Mti::REVERSAL_ADVICE_RESPONSE);
    assert_eq!(a.response_code, Some(ResponseCode::ORIGINAL_NOT_FOUND));

    // No F90 at all: a format error.
    let mut bare = upstream_reversal_of(&real, 6);
    bare.original = None;
    let a = gw.request(&bare).await;
    assert_eq!(a.response_code, Some(ResponseCode::FORMAT_ERROR));

    assert!(
        peer.reversals.lock().unwrap().is_empty(),
        "nothing reversed"
    );
    assert_eq!(bank_requests(&peer), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reversal_after_a_68_is_accepted_without_a_second_reversal() {
    let pki = Pki::new();
    let peer = silent_bank(&pki, ReversalBehaviour::Acknowledge).await;
    let sw = start(
        &pki,
        &[spec("003", "up_rev_late", &peer, SHORT_TIMEOUT_MS)],
        "",
    )
    .await;
    let mut gw = gateway(&sw, &pki).await;

    let original = keyed(1, "003", "up-rev-after-68");
    assert_eq!(
        gw.request(&original).await.response_code,
        Some(ResponseCode::LATE)
    );
    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", "up_rev_late"), ("result", "acknowledged")],
        1.0,
    )
    .await;
    // The gateway reverses what it was told 68 for: the switch knows the
    // transaction and is (was) reversing it already.
    let sent = bank_request(&peer, 0);
    let before = reversals_naming(&peer, &sent);
    assert_reversal_attempts(&before);
    let rev = upstream_reversal_of(&original, 2);
    let a = gw.request(&rev).await;
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED), "not 25");
    assert_echoes(&rev, &a);
    // Nothing was queued for it: the queue is empty as the 0410 arrives.
    let status = reversals_json(sw.admin).await;
    assert_eq!(queue_of(&status, "up_rev_late")["queued"], 0, "{status}");
    assert_eq!(reversals_naming(&peer, &sent).len(), before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_file_journal_retries_and_reversals_behave_the_same_and_survive_a_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let journal = format!("[journal]\ndir = {:?}\n", dir.path().display().to_string());
    let good = approving_bank(&pki).await;
    let silent = silent_bank(&pki, ReversalBehaviour::Acknowledge).await;
    let banks = [
        spec("003", "jr_good", &good, 3_000),
        spec("004", "jr_silent", &silent, SHORT_TIMEOUT_MS),
    ];
    let sw = start(&pki, &banks, &journal).await;
    let (status, body) = http_get(sw.admin, "/journal").await;
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["healthy"], true, "{body}");
    let segments_at_start = j["segments"].as_u64().expect("a segment count");
    assert!(segments_at_start >= 1, "{body}");

    // 1 with the journal on.
    let mut gw = gateway(&sw, &pki).await;
    let first = keyed(1, "003", "journal-retry");
    let original = gw.request(&first).await;
    assert_eq!(original.response_code, Some(ResponseCode::APPROVED));
    let retry = retry_of(&first, 2);
    let again = gw.request(&retry).await;
    assert_eq!(again.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(auth(&again), auth(&original));
    assert_echoes(&retry, &again);
    assert_eq!(bank_requests(&good), 1);

    // 4 with the journal on.
    drop(gw);
    unknown_outcome_is_reversed(&sw, &pki, &silent, ("004", "jr_silent")).await;

    let (status, body) = http_get(sw.admin, "/journal").await;
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["healthy"], true, "{body}");
    assert!(
        j["segments"].as_u64().unwrap() >= segments_at_start,
        "{body}"
    );
    let on_disk: u64 = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk > 0, "records reached the segment files");
    assert!(sw.stop().await, "drained");
    released(dir.path()).await;

    // After a restart the keys are remembered and the settled reversal is
    // not resumed.
    let sw = start(&pki, &banks, &journal).await;
    let status = reversals_json(sw.admin).await;
    assert_eq!(queue_of(&status, "jr_silent")["queued"], 0, "{status}");
    let mut gw = gateway(&sw, &pki).await;
    let after = retry_of(&first, 3);
    let a = gw.request(&after).await;
    assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(auth(&a), auth(&original));
    assert_echoes(&after, &a);
    let a = gw
        .request(&retry_of(&keyed(10, "004", "unknown-outcome"), 11))
        .await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE), "68 remembered");
    assert_eq!(bank_requests(&good), 1);
    assert_eq!(bank_requests(&silent), 1);
    assert!(sw.stop().await, "drained");
}

// ---------------------------------------------------------------- scenarios

/// A transfer to `peer` (bank `code`, configured as `bank`; silent,
/// acknowledging reversals) gets 68; a retry
/// of its key gets 68 without reaching the bank; the bank then receives
/// one 0400 whose F90 names the original as sent to it, and the switch
/// counts the reversal acknowledged.
async fn unknown_outcome_is_reversed(
    sw: &Running,
    pki: &Pki,
    peer: &BankPeer,
    (code, bank): (&str, &str),
) {
    let mut gw = gateway(sw, pki).await;
    let req = keyed(10, code, "unknown-outcome");
    let a = gw.request(&req).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE));
    assert_echoes(&req, &a);
    assert_eq!(a.auth_id, None);

    wait_metric(
        sw.admin,
        "fps_switch_reversals_total",
        &[("bank", bank), ("result", "acknowledged")],
        1.0,
    )
    .await;
    let sent = bank_request(peer, 0);
    let reversals = peer.reversals.lock().unwrap().clone();
    // One 0400, acknowledged at once; a loaded machine may have needed a
    // repeat (0401) after a reversal attempt timed out.
    assert_reversal_attempts(&reversals);
    assert_eq!(reversals_naming(peer, &sent).len(), reversals.len());
    let rev = &reversals[0];
    let od = rev.original.expect("F90 on the reversal");
    assert_eq!(od.mti, Mti::CREDIT_TRANSFER, "F90 MTI");
    assert_eq!(Some(od.stan), sent.stan, "F90 STAN as sent to the bank");
    assert_eq!(Some(od.transmitted_at), sent.transmitted_at, "F90 F7");
    assert_eq!(Some(od), sent.original_data(), "F90 as a whole");
    assert_ne!(rev.stan, sent.stan, "the reversal has its own STAN");
    assert_eq!(rev.amount, sent.amount);
    assert_eq!(rev.receiving_bank, sent.receiving_bank);
    // The switch's ids, not the upstream's, went to the bank.
    assert_ne!(sent.rrn, req.rrn);

    let retry = retry_of(&req, 11);
    let a = gw.request(&retry).await;
    assert_eq!(a.response_code, Some(ResponseCode::LATE), "same outcome");
    assert_echoes(&retry, &a);
    assert_eq!(bank_requests(peer), 1, "no second debit attempt");
    let status = reversals_json(sw.admin).await;
    assert_eq!(queue_of(&status, bank)["queued"], 0, "{status}");
}

// ---------------------------------------------------------------- helpers

fn spec(code: &'static str, name: &'static str, peer: &BankPeer, timeout_ms: u64) -> BankSpec {
    BankSpec {
        code,
        name,
        codec: "iso8583:canonical",
        addr: peer.addr,
        request_timeout_ms: timeout_ms,
    }
}

async fn approving_bank(pki: &Pki) -> BankPeer {
    BankPeer::start(
        pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
    )
    .await
}

async fn silent_bank(pki: &Pki, reversal: ReversalBehaviour) -> BankPeer {
    BankPeer::start_full(
        pki,
        "iso8583:canonical",
        Behaviour::Silent,
        reversal,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
}

/// A switch over `banks` with `extra` TOML sections, every bank link up.
async fn start(pki: &Pki, banks: &[BankSpec], extra: &str) -> Running {
    let toml = format!("{}\n{extra}", config_toml(pki, banks, ""));
    let sw = Running::start(&toml).await;
    sw.wait_ready().await;
    sw
}

async fn gateway(sw: &Running, pki: &Pki) -> Gateway {
    Gateway::connect_tls(sw.upstream, pki, Some("gateway"))
        .await
        .unwrap()
}

/// A credit transfer carrying idempotency key `key` (F123).
fn keyed(stan: u32, bank: &str, key: &str) -> Transaction {
    let mut t = credit_transfer(stan, bank);
    t.idempotency_key = Some(IdempotencyKey::parse(key.as_bytes()).unwrap());
    t
}

/// The gateway's retry of `t`: same key and content, its own F7, F11,
/// F37 and F41.
fn retry_of(t: &Transaction, stan: u32) -> Transaction {
    let mut r = t.clone();
    r.stan = Some(Stan::new(stan).unwrap());
    r.rrn = Some(Rrn::parse(format!("RT{stan:010}").as_bytes()).unwrap());
    r.transmitted_at = Some(TransmissionDateTime::parse(b"0315103107").unwrap());
    r.terminal_id = Some(TerminalId::parse(b"TERM0042").unwrap());
    r
}

/// The gateway's 0400 of `original` (F90 names it), with its own ids.
fn upstream_reversal_of(original: &Transaction, stan: u32) -> Transaction {
    let mut r = original.clone();
    r.mti = Mti::REVERSAL;
    r.idempotency_key = None;
    r.original = original.original_data();
    r.stan = Some(Stan::new(stan).unwrap());
    r.rrn = Some(Rrn::parse(format!("RV{stan:010}").as_bytes()).unwrap());
    r.transmitted_at = Some(TransmissionDateTime::parse(b"0315103500").unwrap());
    r
}

fn assert_echoes(req: &Transaction, answer: &Transaction) {
    assert_eq!(answer.mti, req.mti.response());
    assert_eq!(answer.transmitted_at, req.transmitted_at, "F7");
    assert_eq!(answer.stan, req.stan, "F11");
    assert_eq!(answer.rrn, req.rrn, "F37");
    assert_eq!(answer.terminal_id, req.terminal_id, "F41");
}

fn auth(t: &Transaction) -> Option<String> {
    t.auth_id.map(|a| a.as_str().to_owned())
}

/// Financial requests the bank has received.
fn bank_requests(peer: &BankPeer) -> usize {
    let n = peer.financial_requests.load(Ordering::Relaxed);
    assert_eq!(n, peer.requests.lock().unwrap().len());
    n
}

/// The `i`-th financial request the bank received, as it saw it.
fn bank_request(peer: &BankPeer, i: usize) -> Transaction {
    peer.requests.lock().unwrap()[i].clone()
}

/// Reversal-side messages at the bank whose F90 names `sent`.
fn reversals_naming(peer: &BankPeer, sent: &Transaction) -> Vec<Transaction> {
    let od = sent.original_data().expect("a sent request has F7 and F11");
    peer.reversals
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.original == Some(od))
        .cloned()
        .collect()
}

/// The reversal messages of one original: an 0400, then only repeats.
fn assert_reversal_attempts(sent: &[Transaction]) {
    let mtis: Vec<Mti> = sent.iter().map(|r| r.mti).collect();
    assert_eq!(mtis.first(), Some(&Mti::REVERSAL), "{mtis:?}");
    assert!(
        mtis[1..].iter().all(|m| *m == Mti::REVERSAL.repeat()),
        "{mtis:?}"
    );
}

/// Send an 0800 echo and assert that the next frame on `gw` is its 0810:
/// nothing else (e.g. a forwarded late answer) was queued before it.
async fn assert_next_is_echo(gw: &mut Gateway, stan: u32) {
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = Some(TransmissionDateTime::parse(b"0315110000").unwrap());
    echo.stan = Some(Stan::new(stan).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    let next = gw.request(&echo).await;
    assert_eq!(
        next.mti,
        Mti::NETWORK_RESPONSE,
        "unexpected frame: {next:?}"
    );
    assert_eq!(next.stan, echo.stan);
}

async fn metrics(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of series `name` whose labels include every `(key, value)`.
fn metric_of(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None => ("", rest),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// Poll `/metrics` until the series reaches `want`.
async fn wait_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{name}{labels:?} == {want}");
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            if metric_of(&metrics(admin).await, name, labels) == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if reached.is_err() {
        let text = metrics(admin).await;
        let seen: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
        panic!("timed out waiting for {what}; series now: {seen:#?}");
    }
}

/// Poll `cond` until it holds.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = tokio::time::timeout(WAIT, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "timed out waiting until {what}");
}

/// Wait until the stopped switch has let go of the journal directory:
/// its key store (dropped with the journal, after it) opens again.
async fn released(dir: &std::path::Path) {
    let path = dir.join("keys.redb");
    eventually("the stopped switch releases its key store", || {
        let path = path.clone();
        async move {
            let cfg = fps_switch::keystore::KeyStoreConfig::new(path);
            fps_switch::keystore::KeyStore::open(cfg).is_ok()
        }
    })
    .await;
}

async fn reversals_json(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/reversals").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// One bank's entry of `/reversals`.
fn queue_of<'a>(status: &'a serde_json::Value, bank: &str) -> &'a serde_json::Value {
    status["banks"]
        .as_array()
        .and_then(|b| b.iter().find(|q| q["bank"] == bank))
        .unwrap_or_else(|| panic!("no queue for {bank}: {status}"))
}

/// A canonical ISO 8583 bank peer on a free port.
async fn canonical_peer(pki: &Pki, behaviour: Behaviour, reversal: ReversalBehaviour) -> BankPeer {
    BankPeer::start_full(
        pki,
        "iso8583:canonical",
        behaviour,
        reversal,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
}
