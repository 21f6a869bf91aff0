//! Status and reason codes: ISO 20022 <-> canonical response codes (F39).
//!
//! The tables here are the single source of the mapping described in the
//! module documentation of [`crate::iso20022`]; decoding and encoding both use
//! them, so a consistent (code, reason) pair survives a round trip.

use crate::model::{ReasonCode, ResponseCode};

use super::values::StatusCode;

/// Payment status codes (`TxSts`, ExternalPaymentTransactionStatus1Code) that
/// mean the payment is accepted and final: the canonical `00`.
pub const ACCEPTED_STATUSES: &[&str] = &["ACSC", "ACCP", "ACSP", "ACCC", "ACWC"];

/// Payment status codes that are not an outcome yet: decoded as
/// [`ResponseCode::PENDING`] (`09`; the switch treats it as outcome unknown).
pub const PENDING_STATUSES: &[&str] = &["PDNG", "ACTC", "RCVD", "ACWP", "ACFC", "PATC", "PART"];

/// Payment status codes that are a final refusal: the reason decides the code.
pub const REJECTED_STATUSES: &[&str] = &["RJCT", "BLCK"];

/// Rejection reasons (`StsRsnInf/Rsn/Cd`) and the canonical code each maps
/// to; any other reason, or none, maps to `05`. The first reason listed for
/// a code is the one written when encoding that code without a reason.
pub const REJECTION_REASONS: &[(&str, ResponseCode)] = &[
    ("AC01", ResponseCode::UNKNOWN_ACCOUNT),
    ("AC03", ResponseCode::UNKNOWN_ACCOUNT),
    ("AC04", ResponseCode::UNKNOWN_ACCOUNT),
    ("AC06", ResponseCode::UNKNOWN_ACCOUNT),
    ("BE01", ResponseCode::UNKNOWN_ACCOUNT),
    ("AM04", ResponseCode::INSUFFICIENT_FUNDS),
    ("AM09", ResponseCode::INVALID_AMOUNT),
    ("AM02", ResponseCode::INVALID_AMOUNT),
    ("AG01", ResponseCode::NOT_PERMITTED),
    ("DUPL", ResponseCode::DUPLICATE),
    ("AM05", ResponseCode::DUPLICATE),
    ("FF01", ResponseCode::FORMAT_ERROR),
    ("AB08", ResponseCode::BANK_UNAVAILABLE),
    ("AB05", ResponseCode::BANK_UNAVAILABLE),
    ("AB06", ResponseCode::BANK_UNAVAILABLE),
    ("AB07", ResponseCode::BANK_UNAVAILABLE),
];

/// Reason written for a refusal whose canonical code has no entry in
/// [`REJECTION_REASONS`] (`05` and switch-only codes such as `96`):
/// "not specified, agent generated". It decodes back as `05`.
pub const DEFAULT_REJECTION_REASON: &str = "MS03";

/// Cancellation refusal reasons (`CxlStsRsnInf/Rsn/Cd`) with their own
/// canonical code; any other reason maps to `05`.
pub const CANCELLATION_REJECTION_REASONS: &[(&str, ResponseCode)] =
    &[("NOOR", ResponseCode::ORIGINAL_NOT_FOUND)];

/// Reason written for a refused cancellation without a better one: "agent
/// decision". It decodes back as `05`.
pub const DEFAULT_CANCELLATION_REJECTION_REASON: &str = "AGNT";

/// Why a status could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownStatus;

/// The canonical response code of a payment status (pacs.002 `TxSts`) and
/// its reason: `00` accepted, `09` pending, any other code refused.
pub fn response_for_payment_status(
    status: &StatusCode,
    reason: Option<&ReasonCode>,
) -> Result<ResponseCode, UnknownStatus> {
    let s = status.as_str();
    if ACCEPTED_STATUSES.contains(&s) {
        Ok(ResponseCode::APPROVED)
    } else if PENDING_STATUSES.contains(&s) {
        Ok(ResponseCode::PENDING)
    } else if REJECTED_STATUSES.contains(&s) {
        Ok(response_for_rejection_reason(reason))
    } else {
        Err(UnknownStatus)
    }
}

/// The canonical code of a refusal with this reason (`05` when unknown or absent).
pub fn response_for_rejection_reason(reason: Option<&ReasonCode>) -> ResponseCode {
    lookup(REJECTION_REASONS, reason).unwrap_or(ResponseCode::DO_NOT_HONOUR)
}

/// The `TxSts` and reason to write for a canonical outcome: `00` -> `ACSC`,
/// `09` -> `PDNG`, any other code -> `RJCT` with `reason` when it maps back
/// to that same code, else the first reason listed for the code (or `MS03`).
pub fn payment_status_for_response(
    code: ResponseCode,
    reason: Option<ReasonCode>,
) -> (StatusCode, Option<ReasonCode>) {
    match code {
        c if c == ResponseCode::PENDING => (StatusCode::known("PDNG"), reason),
        c if c.is_approved() => (StatusCode::known("ACSC"), reason),
        c => {
            let keep = reason.filter(|r| response_for_rejection_reason(Some(r)) == c);
            let reason = keep.unwrap_or_else(|| {
                reason_for(REJECTION_REASONS, c).unwrap_or_else(|| known(DEFAULT_REJECTION_REASON))
            });
            (StatusCode::known("RJCT"), Some(reason))
        }
    }
}

/// The canonical code of a cancellation answer (camt.029): `TxCxlSts`
/// `ACCR` (or `Sts/Conf` `CNCL`) -> `00`; `RJCR` -> the reason's code
/// (`NOOR` -> `25`, else `05`); `PDCR`/`PECR` -> `09` (pending).
pub fn response_for_cancellation_status(
    status: &StatusCode,
    reason: Option<&ReasonCode>,
) -> Result<ResponseCode, UnknownStatus> {
    match status.as_str() {
        "ACCR" | "CNCL" => Ok(ResponseCode::APPROVED),
        "RJCR" => {
            Ok(lookup(CANCELLATION_REJECTION_REASONS, reason)
                .unwrap_or(ResponseCode::DO_NOT_HONOUR))
        }
        "PDCR" | "PECR" => Ok(ResponseCode::PENDING),
        _ => Err(UnknownStatus),
    }
}

/// What a camt.029 says for a canonical outcome: (`Sts/Conf`, `TxCxlSts`,
/// reason). `00` -> `CNCL`/`ACCR`; `09` -> `PDCR`/`PDCR`; a refusal ->
/// `RJCR`/`RJCR` with `reason` when it maps back to the code, else `NOOR` for
/// `25` and `AGNT` otherwise.
pub fn cancellation_status_for_response(
    code: ResponseCode,
    reason: Option<ReasonCode>,
) -> (StatusCode, StatusCode, Option<ReasonCode>) {
    match code {
        c if c == ResponseCode::PENDING => {
            (StatusCode::known("PDCR"), StatusCode::known("PDCR"), reason)
        }
        c if c.is_approved() => (StatusCode::known("CNCL"), StatusCode::known("ACCR"), reason),
        c => {
            let maps_back = |r: &ReasonCode| {
                lookup(CANCELLATION_REJECTION_REASONS, Some(r))
                    .unwrap_or(ResponseCode::DO_NOT_HONOUR)
                    == c
            };
            let reason = reason.filter(maps_back).unwrap_or_else(|| {
                reason_for(CANCELLATION_REJECTION_REASONS, c)
                    .unwrap_or_else(|| known(DEFAULT_CANCELLATION_REJECTION_REASON))
            });
            (
                StatusCode::known("RJCR"),
                StatusCode::known("RJCR"),
                Some(reason),
            )
        }
    }
}

fn lookup(table: &[(&str, ResponseCode)], reason: Option<&ReasonCode>) -> Option<ResponseCode> {
    let r = reason?.as_str();
    table.iter().find(|(code, _)| *code == r).map(|(_, c)| *c)
}

fn reason_for(table: &[(&'static str, ResponseCode)], code: ResponseCode) -> Option<ReasonCode> {
    table
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(r, _)| known(r))
}

fn known(code: &'static str) -> ReasonCode {
    // Only called with the 4-letter codes of this module's tables.
    ReasonCode::parse(code.as_bytes()).expect("reason code constants are 4 letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: &str) -> ReasonCode {
        ReasonCode::parse(code.as_bytes()).unwrap()
    }

    #[test]
    fn payment_statuses_map_as_documented() {
        let st = |s: &str| StatusCode::parse(s.as_bytes()).unwrap();
        for s in ["ACSC", "ACCP", "ACSP"] {
            assert_eq!(
                response_for_payment_status(&st(s), None),
                Ok(ResponseCode::APPROVED)
            );
        }
        assert_eq!(
            response_for_payment_status(&st("PDNG"), None),
            Ok(ResponseCode::PENDING)
        );
        let cases = [
            ("AC01", "14"),
            ("AC04", "14"),
            ("AC06", "14"),
            ("BE01", "14"),
            ("AM04", "51"),
            ("AM02", "13"),
            ("AM09", "13"),
            ("AG01", "57"),
            ("DUPL", "94"),
            ("NARR", "05"),
        ];
        for (reason, code) in cases {
            let got = response_for_payment_status(&st("RJCT"), Some(&r(reason)));
            assert_eq!(got.unwrap().as_str(), code, "{reason}");
        }
        assert_eq!(
            response_for_payment_status(&st("RJCT"), None),
            Ok(ResponseCode::DO_NOT_HONOUR)
        );
        assert_eq!(
            response_for_payment_status(&st("XXXX"), None),
            Err(UnknownStatus)
        );
    }

    #[test]
    fn encoding_picks_the_inverse() {
        let (s, reason) = payment_status_for_response(ResponseCode::APPROVED, None);
        assert_eq!((s.as_str(), reason), ("ACSC", None));
        let (s, reason) = payment_status_for_response(ResponseCode::INSUFFICIENT_FUNDS, None);
        assert_eq!((s.as_str(), reason.unwrap().as_str()), ("RJCT", "AM04"));
        let (_, reason) =
            payment_status_for_response(ResponseCode::UNKNOWN_ACCOUNT, Some(r("AC04")));
        assert_eq!(reason.unwrap().as_str(), "AC04");
        // An inconsistent reason gives way to the code's own.
        let (_, reason) =
            payment_status_for_response(ResponseCode::UNKNOWN_ACCOUNT, Some(r("AM04")));
        assert_eq!(reason.unwrap().as_str(), "AC01");
        let (_, reason) = payment_status_for_response(ResponseCode::SYSTEM_MALFUNCTION, None);
        assert_eq!(reason.unwrap().as_str(), "MS03");
        let (s, _) = payment_status_for_response(ResponseCode::PENDING, None);
        assert_eq!(s.as_str(), "PDNG");
        let (conf, tx, reason) =
            cancellation_status_for_response(ResponseCode::ORIGINAL_NOT_FOUND, None);
        assert_eq!(
            (conf.as_str(), tx.as_str(), reason.unwrap().as_str()),
            ("RJCR", "RJCR", "NOOR")
        );
    }
}
