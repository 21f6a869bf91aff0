//! ISO 8583 engine driven by dialect files.
//!
//! One engine serves every bank: a [`Dialect`] (loaded from
//! `configs/dialects/*.toml`, see [`spec`]) says how each field is laid out
//! and which canonical field it carries. [`Iso8583Codec`] decodes a message
//! straight into a [`Transaction`] without heap allocation (ASCII values are
//! parsed in place; EBCDIC and BCD values are transcoded into a stack
//! buffer) and encodes one into a caller-owned buffer. [`IsoMessage`] is the
//! generic, field-number view used by tools, simulators and differential
//! tests.
//!
//! Strictness: non-digits in numeric fields, lengths over the maximum,
//! truncated fields, bad BCD nibbles, bitmap bits the dialect does not lay
//! out and bytes after the last field are all refused, each error naming the
//! field. Fields the dialect lays out but does not map to the canonical model
//! are checked and then ignored (or refused when `unmapped = "reject"`).

mod canonical;
mod ebcdic_tables;
mod salvage;
pub mod spec;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;

pub use canonical::CanonicalField;
pub use spec::{Dialect, DialectError, FieldLength, FieldSpec};

use canonical::SCRATCH_BYTES;
use spec::Unmapped;
use wire::{
    bit, logical, read_bitmap, read_field, read_mti, write_bitmap, write_field, write_mti, Bitmap,
    Reader,
};

use crate::auth::AuthSlot;
use crate::error::{CodecError, Location};
use crate::model::{AuthInput, CharClass, Mti, Transaction};
use crate::MessageCodec;

/// Dialects shipped in `configs/dialects/`, by name.
const BUILTIN: &[(&str, &str)] = &[
    (
        "canonical",
        include_str!("../../../configs/dialects/canonical.toml"),
    ),
    (
        "iso87-ascii-binary-bitmap",
        include_str!("../../../configs/dialects/iso87-ascii-binary-bitmap.toml"),
    ),
    (
        "iso87-bcd-binary",
        include_str!("../../../configs/dialects/iso87-bcd-binary.toml"),
    ),
    (
        "iso93-ebcdic",
        include_str!("../../../configs/dialects/iso93-ebcdic.toml"),
    ),
];

/// Names of the dialects shipped with the switch.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// Load a shipped dialect by name.
pub fn builtin(name: &str) -> Option<Result<Dialect, DialectError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| Dialect::from_toml(text))
}

/// A message as field numbers and logical values: ASCII text for character
/// classes, raw bytes for class `b`. For tools and tests; allocates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IsoMessage {
    /// The MTI as sent on the wire (the dialect's numbering).
    pub mti: [u8; 4],
    /// Present fields by number (2..=128).
    pub fields: BTreeMap<u8, Vec<u8>>,
}

/// The ISO 8583 codec of one dialect. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Iso8583Codec {
    dialect: Arc<Dialect>,
}

impl Iso8583Codec {
    /// A codec for `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Iso8583Codec {
            dialect: Arc::new(dialect),
        }
    }

    /// A codec for a shipped dialect. Panics only if a shipped file is
    /// broken, which the test suite rules out.
    pub fn builtin(name: &str) -> Option<Self> {
        builtin(name).map(|d| Self::new(d.expect("shipped dialects are valid (tested)")))
    }

    /// The dialect.
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Decode one message into the canonical model.
    pub fn decode(&self, msg: &[u8]) -> Result<Transaction, CodecError> {
        self.decode_canonical(msg).map(|(txn, _)| txn)
    }

    /// Decode, and also return where the MAC field starts when the message
    /// carries one as its last field.
    fn decode_canonical(&self, msg: &[u8]) -> Result<(Transaction, Option<usize>), CodecError> {
        let d = &*self.dialect;
        let mut scratch = [0u8; SCRATCH_BYTES];
        let mut txn = Transaction::new(Mti::CREDIT_TRANSFER);
        // (start of the MAC field, whether another field followed it)
        let mut mac_at: Option<(usize, bool)> = None;
        let mti = self.walk(msg, |n, spec, raw, units, start| {
            if let Some((_, after)) = &mut mac_at {
                *after = true;
            }
            match d.canonical_of[usize::from(n)] {
                Some(cf) => {
                    if cf == CanonicalField::Mac {
                        mac_at = Some((start, false));
                    }
                    let at = Location::Field(n);
                    let mut v = logical(raw, units, spec, n, &mut scratch)?;
                    if let Some(t) = &d.translation_of[usize::from(n)] {
                        v = t.to_canonical(v).ok_or(CodecError::Invalid {
                            at,
                            reason: "value has no translation",
                        })?;
                    }
                    cf.set(&mut txn, v).map_err(|e| CodecError::value(at, e))
                }
                None => Ok(()),
            }
        })?;
        txn.mti = d.to_canonical_mti(mti);
        let mac_start = match mac_at {
            Some((start, false)) => Some(start),
            _ => None,
        };
        Ok((txn, mac_start))
    }

    /// Encode `txn`, appending the message to `out`. Canonical fields the
    /// dialect does not map are not sent. On error `out` is left as it was.
    pub fn encode(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_fields(txn, out, None)
    }

    /// Where this dialect carries a MAC: the field `mac` maps to, if it has
    /// a fixed length and is binary (the MAC bytes) or text that admits
    /// upper-case hex of an even length (the MAC in hex).
    pub fn mac_slot(&self) -> AuthSlot {
        let d = &*self.dialect;
        let Some(field) = d.field_of(CanonicalField::Mac) else {
            return AuthSlot::None;
        };
        let Some(spec) = d.fields[usize::from(field)].as_ref() else {
            return AuthSlot::None;
        };
        let FieldLength::Fixed(len) = spec.length else {
            return AuthSlot::None;
        };
        let len = usize::from(len);
        if spec.class == CharClass::B {
            AuthSlot::MacField {
                field,
                len,
                hex: false,
            }
        } else if len % 2 == 0 && len > 0 && spec.class.admits(b"0123456789ABCDEF") {
            AuthSlot::MacField {
                field,
                len: len / 2,
                hex: true,
            }
        } else {
            AuthSlot::None
        }
    }

    /// The bytes a MAC of `txn` covers: the message as [`Self::encode`]
    /// writes it with a MAC, up to (not including) the MAC field. Refused
    /// when the dialect has no MAC field or a field would follow it.
    pub fn encode_mac_input(
        &self,
        txn: &Transaction,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let AuthSlot::MacField { field, .. } = self.mac_slot() else {
            return Err(crate::auth::no_slot(
                Location::Message,
                "the dialect has no fixed-length MAC field",
            ));
        };
        self.encode_fields(txn, out, Some(field))
    }

    /// Encode every present mapped field; with `mac_field`, set its bit,
    /// stop before it and refuse any field after it.
    fn encode_fields(
        &self,
        txn: &Transaction,
        out: &mut BytesMut,
        mac_field: Option<u8>,
    ) -> Result<(), CodecError> {
        let d = &*self.dialect;
        let mut bits = d
            .mapped
            .iter()
            .filter(|(_, cf)| cf.present(txn))
            .fold(0 as Bitmap, |acc, (n, _)| acc | bit(*n));
        if let Some(m) = mac_field {
            bits |= bit(m);
            // Fields after m have lower bits: bit(m) - 1 masks them all.
            if bits & (bit(m) - 1) != 0 {
                return Err(CodecError::Invalid {
                    at: Location::Field(m),
                    reason: "a field follows the MAC field, which must be last",
                });
            }
        }
        let start = out.len();
        out.reserve(512);
        self.write_preamble(d.to_dialect_mti(txn.mti), bits, out);
        let mut buf = [0u8; SCRATCH_BYTES];
        for (n, cf) in &d.mapped {
            if Some(*n) == mac_field {
                break;
            }
            let Some(len) = cf.write(txn, &mut buf) else {
                continue;
            };
            let at = Location::Field(*n);
            let value = match &d.translation_of[usize::from(*n)] {
                Some(t) => t.to_dialect(&buf[..len]).ok_or(CodecError::Invalid {
                    at,
                    reason: "value has no translation",
                }),
                None => Ok(&buf[..len]),
            };
            let result = match (&d.fields[usize::from(*n)], value) {
                (Some(spec), Ok(v)) => write_field(*n, spec, v, out),
                (None, _) => Err(CodecError::UndefinedField { at }),
                (_, Err(e)) => Err(e),
            };
            if let Err(e) = result {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Decode one message into its fields, without the canonical mapping.
    pub fn decode_message(&self, msg: &[u8]) -> Result<IsoMessage, CodecError> {
        let mut fields = BTreeMap::new();
        let mti = self.walk_fields(msg, |n, spec, raw, units, _| {
            let mut scratch = vec![0u8; units];
            let v = logical(raw, units, spec, n, &mut scratch)?;
            fields.insert(n, v.to_vec());
            Ok(())
        })?;
        Ok(IsoMessage {
            mti: *mti.as_bytes(),
            fields,
        })
    }

    /// Encode a message from its fields. On error `out` is left as it was.
    pub fn encode_message(&self, msg: &IsoMessage, out: &mut BytesMut) -> Result<(), CodecError> {
        let d = &*self.dialect;
        let mti = Mti::parse(&msg.mti).map_err(|e| CodecError::value(Location::Mti, e))?;
        let mut bits: Bitmap = 0;
        for n in msg.fields.keys() {
            if !(2..=128).contains(n) || d.fields[usize::from(*n)].is_none() {
                return Err(CodecError::UndefinedField {
                    at: Location::Field(*n),
                });
            }
            bits |= bit(*n);
        }
        let start = out.len();
        self.write_preamble(mti, bits, out);
        for (n, v) in &msg.fields {
            // Checked above: every key is laid out by the dialect.
            let spec = d.fields[usize::from(*n)]
                .as_ref()
                .ok_or(CodecError::UndefinedField {
                    at: Location::Field(*n),
                })?;
            if let Err(e) = write_field(*n, spec, v, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    fn write_preamble(&self, mti: Mti, bits: Bitmap, out: &mut BytesMut) {
        let d = &*self.dialect;
        out.extend_from_slice(&d.header);
        write_mti(mti.as_bytes(), d.mti, out);
        write_bitmap(bits, d.bitmap, out);
    }

    /// Walk a message's fields, refusing unmapped ones when the dialect says so.
    #[inline]
    fn walk(
        &self,
        msg: &[u8],
        mut visit: impl FnMut(u8, &FieldSpec, &[u8], usize, usize) -> Result<(), CodecError>,
    ) -> Result<Mti, CodecError> {
        let d = &*self.dialect;
        self.walk_fields(msg, |n, spec, raw, units, start| {
            if d.unmapped == Unmapped::Reject && d.canonical_of[usize::from(n)].is_none() {
                return Err(CodecError::UndefinedField {
                    at: Location::Field(n),
                });
            }
            visit(n, spec, raw, units, start)
        })
    }

    /// Walk every field of a message in order, checking layout and content.
    /// `visit` gets the field number, layout, raw bytes, length in units and
    /// the offset where the field (length prefix included) starts.
    #[inline]
    fn walk_fields(
        &self,
        msg: &[u8],
        mut visit: impl FnMut(u8, &FieldSpec, &[u8], usize, usize) -> Result<(), CodecError>,
    ) -> Result<Mti, CodecError> {
        let d = &*self.dialect;
        let mut r = Reader { buf: msg, pos: 0 };
        r.take(d.header.len(), Location::Header)?;
        let mti = Mti::parse(&read_mti(&mut r, d.mti)?)
            .map_err(|e| CodecError::value(Location::Mti, e))?;
        let mut bits = read_bitmap(&mut r, d.bitmap)? & !bit(1);
        while bits != 0 {
            // Field numbers run 2..=128 here: leading_zeros of a non-zero u128 is < 128.
            let n = bits.leading_zeros() as u8 + 1;
            bits &= !bit(n);
            let spec = d.fields[usize::from(n)]
                .as_ref()
                .ok_or(CodecError::UndefinedField {
                    at: Location::Field(n),
                })?;
            let start = r.pos;
            let (raw, units) = read_field(&mut r, n, spec)?;
            visit(n, spec, raw, units, start)?;
        }
        if r.remaining() != 0 {
            return Err(CodecError::Invalid {
                at: Location::Message,
                reason: "bytes left after the last field",
            });
        }
        Ok(mti)
    }
}

impl MessageCodec for Iso8583Codec {
    fn decode(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        Iso8583Codec::decode(self, payload)
    }

    fn encode(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        Iso8583Codec::encode(self, txn, out)
    }

    fn auth_slot(&self) -> AuthSlot {
        self.mac_slot()
    }

    fn encode_auth_input(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_mac_input(txn, out)
    }

    fn decode_authenticated(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        let (mut txn, mac_start) = self.decode_canonical(payload)?;
        if let Some(start) = mac_start.filter(|_| txn.mac.is_some()) {
            txn.auth_input = Some(AuthInput::new(bytes::Bytes::copy_from_slice(
                &payload[..start],
            )));
        }
        Ok(txn)
    }

    fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        Iso8583Codec::salvage_request(self, payload)
    }
}
