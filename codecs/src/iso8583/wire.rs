//! Reading and writing single items of an ISO 8583 message: MTI, bitmaps,
//! length prefixes and field data in every supported encoding. Every read
//! checks bounds first and returns an error naming the item; nothing panics.

use bytes::{BufMut, BytesMut};

use super::ebcdic_tables::{ASCII_TO_EBCDIC, EBCDIC_TO_ASCII};
use super::spec::{
    BcdPad, BitmapEncoding, DataEncoding, FieldLength, FieldSpec, MtiEncoding, PrefixEncoding,
};
use crate::error::{CodecError, Location};
use crate::model::CharClass;

/// Bitmap with field 1 in the most significant bit and field 128 in the least.
pub(crate) type Bitmap = u128;

/// The bitmap bit of field `n` (1..=128).
#[inline]
pub(crate) const fn bit(n: u8) -> Bitmap {
    1u128 << (128 - n as u32)
}

/// A cursor over an input message.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn take(&mut self, n: usize, at: Location) -> Result<&'a [u8], CodecError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(CodecError::Truncated {
                at,
                needed: n,
                available,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Map one EBCDIC byte to printable ASCII, or `None`.
#[inline]
pub(crate) fn ebcdic_to_ascii(b: u8) -> Option<u8> {
    match EBCDIC_TO_ASCII[usize::from(b)] {
        0 => None,
        a => Some(a),
    }
}

/// Map one printable ASCII byte to EBCDIC, or `None`.
#[inline]
pub(crate) fn ascii_to_ebcdic(b: u8) -> Option<u8> {
    match ASCII_TO_EBCDIC[usize::from(b)] {
        0 => None,
        e => Some(e),
    }
}

pub(crate) fn read_mti(r: &mut Reader<'_>, enc: MtiEncoding) -> Result<[u8; 4], CodecError> {
    let at = Location::Mti;
    let mut mti = [0u8; 4];
    match enc {
        MtiEncoding::Ascii => mti.copy_from_slice(r.take(4, at)?),
        MtiEncoding::Ebcdic => {
            for (d, b) in mti.iter_mut().zip(r.take(4, at)?) {
                *d = ebcdic_to_ascii(*b).unwrap_or(0);
            }
        }
        MtiEncoding::Bcd => {
            unpack_bcd(r.take(2, at)?, 4, BcdPad::Left, CharClass::N, at, &mut mti)?
        }
    }
    if !CharClass::N.admits(&mti) {
        return Err(CodecError::BadContent { at, class: "n" });
    }
    Ok(mti)
}

pub(crate) fn write_mti(mti: &[u8; 4], enc: MtiEncoding, out: &mut BytesMut) {
    match enc {
        MtiEncoding::Ascii => out.put_slice(mti),
        MtiEncoding::Ebcdic => {
            for d in mti {
                out.put_u8(0xf0 + (d - b'0'));
            }
        }
        MtiEncoding::Bcd => {
            out.put_u8((mti[0] - b'0') << 4 | (mti[1] - b'0'));
            out.put_u8((mti[2] - b'0') << 4 | (mti[3] - b'0'));
        }
    }
}

fn read_bitmap_half(r: &mut Reader<'_>, enc: BitmapEncoding) -> Result<u64, CodecError> {
    let at = Location::Bitmap;
    match enc {
        BitmapEncoding::Binary => {
            let b = r.take(8, at)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok(u64::from_be_bytes(a))
        }
        BitmapEncoding::Hex => r.take(16, at)?.iter().try_fold(0u64, |acc, c| {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'A'..=b'F' => c - b'A' + 10,
                b'a'..=b'f' => c - b'a' + 10,
                _ => return Err(CodecError::BadContent { at, class: "hex" }),
            };
            Ok(acc << 4 | u64::from(v))
        }),
    }
}

/// Read the primary and, when bit 1 says so, the secondary bitmap.
pub(crate) fn read_bitmap(r: &mut Reader<'_>, enc: BitmapEncoding) -> Result<Bitmap, CodecError> {
    let primary = read_bitmap_half(r, enc)?;
    let secondary = if primary & (1 << 63) != 0 {
        let s = read_bitmap_half(r, enc)?;
        if s == 0 {
            return Err(CodecError::Invalid {
                at: Location::Bitmap,
                reason: "secondary bitmap announced but empty",
            });
        }
        s
    } else {
        0
    };
    Ok(u128::from(primary) << 64 | u128::from(secondary))
}

/// Write the bitmap; sets bit 1 when any of fields 65..=128 is present.
pub(crate) fn write_bitmap(mut bits: Bitmap, enc: BitmapEncoding, out: &mut BytesMut) {
    bits &= !bit(1);
    let secondary = bits as u64;
    if secondary != 0 {
        bits |= bit(1);
    }
    let primary = (bits >> 64) as u64;
    let halves = if secondary != 0 { 2 } else { 1 };
    for half in [primary, secondary].into_iter().take(halves) {
        match enc {
            BitmapEncoding::Binary => out.put_slice(&half.to_be_bytes()),
            BitmapEncoding::Hex => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                for i in (0..16).rev() {
                    out.put_u8(HEX[((half >> (i * 4)) & 0xf) as usize]);
                }
            }
        }
    }
}

/// Width in bytes of a length prefix of `digits` digits.
#[inline]
fn prefix_width(enc: PrefixEncoding, digits: u8) -> usize {
    match enc {
        PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => usize::from(digits),
        PrefixEncoding::Bcd | PrefixEncoding::Binary => usize::from(digits).div_ceil(2),
    }
}

fn read_prefix(
    r: &mut Reader<'_>,
    enc: PrefixEncoding,
    digits: u8,
    at: Location,
) -> Result<usize, CodecError> {
    let raw = r.take(prefix_width(enc, digits), at)?;
    let bad = CodecError::BadLengthPrefix { at };
    match enc {
        PrefixEncoding::Ascii => raw.iter().try_fold(0usize, |acc, b| {
            b.is_ascii_digit()
                .then(|| acc * 10 + usize::from(b - b'0'))
                .ok_or(bad)
        }),
        PrefixEncoding::Ebcdic => raw.iter().try_fold(0usize, |acc, b| {
            (0xf0..=0xf9)
                .contains(b)
                .then(|| acc * 10 + usize::from(b - 0xf0))
                .ok_or(bad)
        }),
        PrefixEncoding::Bcd => raw.iter().try_fold(0usize, |acc, b| {
            let (hi, lo) = (b >> 4, b & 0xf);
            (hi <= 9 && lo <= 9)
                .then(|| acc * 100 + usize::from(hi) * 10 + usize::from(lo))
                .ok_or(bad)
        }),
        PrefixEncoding::Binary => Ok(raw.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b))),
    }
}

fn write_prefix(len: usize, enc: PrefixEncoding, digits: u8, out: &mut BytesMut) {
    let width = prefix_width(enc, digits);
    match enc {
        PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => {
            let zero = if enc == PrefixEncoding::Ascii {
                b'0'
            } else {
                0xf0
            };
            for i in (0..width).rev() {
                out.put_u8(zero + ((len / 10usize.pow(i as u32)) % 10) as u8);
            }
        }
        PrefixEncoding::Bcd => {
            for i in (0..width).rev() {
                let pair = (len / 100usize.pow(i as u32)) % 100;
                out.put_u8((((pair / 10) << 4) | (pair % 10)) as u8);
            }
        }
        PrefixEncoding::Binary => {
            for i in (0..width).rev() {
                out.put_u8((len >> (8 * i)) as u8);
            }
        }
    }
}

/// Bytes on the wire for `units` units of `data`.
#[inline]
fn wire_len(data: DataEncoding, units: usize) -> usize {
    match data {
        DataEncoding::Bcd => units.div_ceil(2),
        _ => units,
    }
}

/// Read field `n`'s length and raw bytes and check its content class.
/// Returns the raw wire bytes and the length in units.
#[inline]
pub(crate) fn read_field<'a>(
    r: &mut Reader<'a>,
    n: u8,
    spec: &FieldSpec,
) -> Result<(&'a [u8], usize), CodecError> {
    let at = Location::Field(n);
    let units = match spec.length {
        FieldLength::Fixed(len) => usize::from(len),
        FieldLength::Var { digits, max } => {
            let len = read_prefix(r, spec.prefix, digits, at)?;
            if len > usize::from(max) {
                return Err(CodecError::TooLong {
                    at,
                    len,
                    max: usize::from(max),
                });
            }
            len
        }
    };
    let raw = r.take(wire_len(spec.data, units), at)?;
    check_raw(raw, units, spec, at)?;
    Ok((raw, units))
}

/// Check the content class of raw field bytes without copying them.
fn check_raw(raw: &[u8], units: usize, spec: &FieldSpec, at: Location) -> Result<(), CodecError> {
    let bad = CodecError::BadContent {
        at,
        class: spec.class.name(),
    };
    match spec.data {
        DataEncoding::Ascii | DataEncoding::Binary => {
            spec.class.admits(raw).then_some(()).ok_or(bad)
        }
        DataEncoding::Ebcdic => raw
            .iter()
            .all(|b| ebcdic_to_ascii(*b).is_some_and(|a| spec.class.admits(&[a])))
            .then_some(())
            .ok_or(bad),
        DataEncoding::Bcd => {
            let mut sink = [0u8; 0];
            bcd_walk(raw, units, spec.pad, spec.class, at, &mut sink, false)
        }
    }
}

/// The logical value of a field: the raw bytes themselves for ASCII and
/// binary data, otherwise transcoded into `scratch`. Content was checked by
/// [`read_field`].
#[inline]
pub(crate) fn logical<'s>(
    raw: &'s [u8],
    units: usize,
    spec: &FieldSpec,
    n: u8,
    scratch: &'s mut [u8],
) -> Result<&'s [u8], CodecError> {
    let at = Location::Field(n);
    match spec.data {
        DataEncoding::Ascii | DataEncoding::Binary => Ok(raw),
        _ if units > scratch.len() => Err(CodecError::TooLong {
            at,
            len: units,
            max: scratch.len(),
        }),
        DataEncoding::Ebcdic => {
            for (d, b) in scratch.iter_mut().zip(raw) {
                *d = ebcdic_to_ascii(*b).unwrap_or(b'?');
            }
            Ok(&scratch[..units])
        }
        DataEncoding::Bcd => {
            unpack_bcd(raw, units, spec.pad, spec.class, at, scratch)?;
            Ok(&scratch[..units])
        }
    }
}

/// Write field `n` with logical `value` (ASCII text, or raw bytes for class b).
pub(crate) fn write_field(
    n: u8,
    spec: &FieldSpec,
    value: &[u8],
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    let at = Location::Field(n);
    let units = value.len();
    match spec.length {
        FieldLength::Fixed(len) => {
            let len = usize::from(len);
            if units > len {
                return Err(CodecError::TooLong {
                    at,
                    len: units,
                    max: len,
                });
            }
            if units < len {
                return Err(CodecError::Truncated {
                    at,
                    needed: len,
                    available: units,
                });
            }
        }
        FieldLength::Var { max, .. } if units > usize::from(max) => {
            return Err(CodecError::TooLong {
                at,
                len: units,
                max: usize::from(max),
            });
        }
        FieldLength::Var { .. } => {}
    }
    if !spec.class.admits(value) {
        return Err(CodecError::BadContent {
            at,
            class: spec.class.name(),
        });
    }
    if let FieldLength::Var { digits, .. } = spec.length {
        write_prefix(units, spec.prefix, digits, out);
    }
    match spec.data {
        DataEncoding::Ascii | DataEncoding::Binary => out.put_slice(value),
        DataEncoding::Ebcdic => {
            for b in value {
                // Class checks above admit printable ASCII only (b is excluded from EBCDIC).
                out.put_u8(ascii_to_ebcdic(*b).ok_or(CodecError::BadContent {
                    at,
                    class: spec.class.name(),
                })?);
            }
        }
        DataEncoding::Bcd => pack_bcd(value, spec.pad, out),
    }
    Ok(())
}

fn nibble_of(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        // Track-2 separator.
        _ => 0xd,
    }
}

fn pack_bcd(digits: &[u8], pad: BcdPad, out: &mut BytesMut) {
    let odd = digits.len() % 2 == 1;
    let mut iter = digits.iter().map(|c| nibble_of(*c));
    if odd && pad == BcdPad::Left {
        out.put_u8(iter.next().unwrap_or(0));
    }
    while let Some(hi) = iter.next() {
        let lo = iter.next().unwrap_or(0xf);
        out.put_u8(hi << 4 | lo);
    }
}

fn unpack_bcd(
    raw: &[u8],
    units: usize,
    pad: BcdPad,
    class: CharClass,
    at: Location,
    out: &mut [u8],
) -> Result<(), CodecError> {
    bcd_walk(raw, units, pad, class, at, out, true)
}

/// Walk the nibbles of a BCD value, checking pad and digit nibbles, and
/// (when `write`) storing ASCII digits into `out`.
fn bcd_walk(
    raw: &[u8],
    units: usize,
    pad: BcdPad,
    class: CharClass,
    at: Location,
    out: &mut [u8],
    write: bool,
) -> Result<(), CodecError> {
    let bad = CodecError::BadBcd { at };
    let odd = units % 2 == 1;
    let skip_first = odd && pad == BcdPad::Left;
    let mut k = 0usize;
    for (i, byte) in raw.iter().enumerate() {
        for (j, nib) in [byte >> 4, byte & 0xf].into_iter().enumerate() {
            let pos = i * 2 + j;
            let is_pad = (skip_first && pos == 0) || (odd && pad == BcdPad::Right && pos == units);
            if is_pad {
                let ok = nib == 0 || (pad == BcdPad::Right && nib == 0xf);
                if !ok {
                    return Err(bad);
                }
                continue;
            }
            let c = match nib {
                0..=9 => b'0' + nib,
                0xd if class == CharClass::Z => b'=',
                _ => return Err(bad),
            };
            if write {
                out[k] = c;
            }
            k += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        length: FieldLength,
        class: CharClass,
        data: DataEncoding,
        prefix: PrefixEncoding,
        pad: BcdPad,
    ) -> FieldSpec {
        FieldSpec {
            length,
            class,
            data,
            prefix,
            pad,
        }
    }

    fn round_trip(s: &FieldSpec, value: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_field(7, s, value, &mut out).unwrap();
        let mut r = Reader { buf: &out, pos: 0 };
        let (raw, units) = read_field(&mut r, 7, s).unwrap();
        assert_eq!(r.remaining(), 0);
        let mut scratch = [0u8; 64];
        let v = logical(raw, units, s, 7, &mut scratch).unwrap().to_vec();
        assert_eq!(v, value);
        out.to_vec()
    }

    #[test]
    fn bcd_odd_lengths_pad_on_the_chosen_side() {
        let var = FieldLength::Var { digits: 2, max: 19 };
        let left = spec(
            var,
            CharClass::N,
            DataEncoding::Bcd,
            PrefixEncoding::Bcd,
            BcdPad::Left,
        );
        assert_eq!(round_trip(&left, b"12345"), [0x05, 0x01, 0x23, 0x45]);
        let right = spec(
            var,
            CharClass::N,
            DataEncoding::Bcd,
            PrefixEncoding::Binary,
            BcdPad::Right,
        );
        assert_eq!(round_trip(&right, b"12345"), [0x05, 0x12, 0x34, 0x5f]);
        let z = spec(
            FieldLength::Var { digits: 2, max: 37 },
            CharClass::Z,
            DataEncoding::Bcd,
            PrefixEncoding::Bcd,
            BcdPad::Right,
        );
        assert_eq!(
            round_trip(&z, b"4761=2212"),
            [0x09, 0x47, 0x61, 0xd2, 0x21, 0x2f]
        );
    }

    #[test]
    fn prefixes_in_every_encoding() {
        let v = [b'A'; 123];
        for (prefix, head) in [
            (PrefixEncoding::Ascii, &b"123"[..]),
            (PrefixEncoding::Ebcdic, &[0xf1, 0xf2, 0xf3][..]),
            (PrefixEncoding::Bcd, &[0x01, 0x23][..]),
            (PrefixEncoding::Binary, &[0x00, 0x7b][..]),
        ] {
            let s = spec(
                FieldLength::Var {
                    digits: 3,
                    max: 999,
                },
                CharClass::Ans,
                DataEncoding::Ascii,
                prefix,
                BcdPad::Left,
            );
            let mut out = BytesMut::new();
            write_field(9, &s, &v, &mut out).unwrap();
            assert_eq!(&out[..head.len()], head, "{prefix:?}");
            let mut r = Reader { buf: &out, pos: 0 };
            assert_eq!(read_field(&mut r, 9, &s).unwrap().1, 123);
        }
    }

    #[test]
    fn ebcdic_text_round_trips() {
        let s = spec(
            FieldLength::Fixed(8),
            CharClass::Ans,
            DataEncoding::Ebcdic,
            PrefixEncoding::Ebcdic,
            BcdPad::Left,
        );
        assert_eq!(
            round_trip(&s, b"TERM 01/"),
            [0xe3, 0xc5, 0xd9, 0xd4, 0x40, 0xf0, 0xf1, 0x61]
        );
    }

    #[test]
    fn bad_bytes_are_named_errors() {
        let n4 = spec(
            FieldLength::Fixed(4),
            CharClass::N,
            DataEncoding::Bcd,
            PrefixEncoding::Ascii,
            BcdPad::Left,
        );
        let mut r = Reader {
            buf: &[0x12, 0x3a],
            pos: 0,
        };
        assert_eq!(
            read_field(&mut r, 3, &n4),
            Err(CodecError::BadBcd {
                at: Location::Field(3)
            })
        );
        let ll = spec(
            FieldLength::Var { digits: 2, max: 10 },
            CharClass::N,
            DataEncoding::Ascii,
            PrefixEncoding::Ascii,
            BcdPad::Left,
        );
        for (input, want) in [
            (&b"1"[..], "truncated"),
            (b"-1", "prefix"),
            (b"1a", "prefix"),
            (b"11", "over the maximum"),
            (b"05123", "truncated"),
            (b"0412a", "truncated"),
            (b"0312a", "class n"),
        ] {
            let mut r = Reader { buf: input, pos: 0 };
            let e = read_field(&mut r, 2, &ll).unwrap_err().to_string();
            assert!(
                e.starts_with("field 2") && e.contains(want),
                "{input:?}: {e}"
            );
        }
    }

    #[test]
    fn bitmaps_set_the_secondary_bit_only_when_needed() {
        let mut out = BytesMut::new();
        write_bitmap(bit(3) | bit(4), BitmapEncoding::Hex, &mut out);
        assert_eq!(&out[..], b"3000000000000000");
        out.clear();
        write_bitmap(bit(3) | bit(128), BitmapEncoding::Hex, &mut out);
        assert_eq!(&out[..], b"A0000000000000000000000000000001");
        let mut r = Reader { buf: &out, pos: 0 };
        assert_eq!(
            read_bitmap(&mut r, BitmapEncoding::Hex).unwrap(),
            bit(1) | bit(3) | bit(128)
        );
    }
}
