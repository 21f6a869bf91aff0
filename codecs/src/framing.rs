//! Length headers in front of each message on a stream: an I/O-free framer.
//!
//! A frame on the wire is `length prefix | optional fixed header | message`.
//! The prefix is 2-byte big-endian binary (the canonical upstream protocol),
//! 4-byte ASCII decimal, 2-byte packed BCD or 4-byte big-endian binary. The
//! length is checked against the configured maximum *before* anything is
//! buffered or allocated for the frame, and incomplete input is `Ok(None)`.

use bytes::{Buf, BufMut, BytesMut};
use serde::Deserialize;

use crate::error::{CodecError, Location};

/// Default largest message accepted on a link (DESIGN.md: 8 KiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024;

/// Hard ceiling on `max_frame_bytes`: a peer's length prefix can never make
/// a link buffer more than this, whatever the prefix could express.
pub const MAX_FRAME_BYTES_LIMIT: usize = 1024 * 1024;

/// How the length in front of each message is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPrefix {
    /// 2 bytes, big-endian binary (max 65,535).
    Binary2,
    /// 4 ASCII decimal digits (max 9,999).
    Ascii4,
    /// 2 bytes of packed BCD, 4 digits (max 9,999).
    Bcd2,
    /// 4 bytes, big-endian binary.
    Binary4,
}

impl LengthPrefix {
    /// Size of the prefix in bytes.
    pub const fn width(self) -> usize {
        match self {
            LengthPrefix::Binary2 | LengthPrefix::Bcd2 => 2,
            LengthPrefix::Ascii4 | LengthPrefix::Binary4 => 4,
        }
    }

    /// Largest length the prefix can express.
    pub const fn max_len(self) -> usize {
        match self {
            LengthPrefix::Binary2 => 0xffff,
            LengthPrefix::Ascii4 | LengthPrefix::Bcd2 => 9_999,
            LengthPrefix::Binary4 => u32::MAX as usize,
        }
    }

    fn read(self, p: &[u8]) -> Result<usize, CodecError> {
        let bad = CodecError::BadLengthPrefix {
            at: Location::Frame,
        };
        match self {
            LengthPrefix::Binary2 => Ok(usize::from(u16::from_be_bytes([p[0], p[1]]))),
            LengthPrefix::Binary4 => Ok(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize),
            LengthPrefix::Ascii4 => p[..4].iter().try_fold(0usize, |acc, b| {
                if b.is_ascii_digit() {
                    Ok(acc * 10 + usize::from(b - b'0'))
                } else {
                    Err(bad)
                }
            }),
            LengthPrefix::Bcd2 => p[..2].iter().try_fold(0usize, |acc, b| {
                let (hi, lo) = (b >> 4, b & 0x0f);
                if hi > 9 || lo > 9 {
                    Err(bad)
                } else {
                    Ok(acc * 100 + usize::from(hi) * 10 + usize::from(lo))
                }
            }),
        }
    }

    fn write(self, len: usize, p: &mut [u8]) {
        match self {
            LengthPrefix::Binary2 => p[..2].copy_from_slice(&(len as u16).to_be_bytes()),
            LengthPrefix::Binary4 => p[..4].copy_from_slice(&(len as u32).to_be_bytes()),
            LengthPrefix::Ascii4 => {
                for (i, slot) in p[..4].iter_mut().enumerate() {
                    *slot = b'0' + ((len / 10usize.pow(3 - i as u32)) % 10) as u8;
                }
            }
            LengthPrefix::Bcd2 => {
                p[0] = ((((len / 1000) % 10) << 4) | ((len / 100) % 10)) as u8;
                p[1] = ((((len / 10) % 10) << 4) | (len % 10)) as u8;
            }
        }
    }
}

/// Framing settings of one link, as found in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    /// How the length is written.
    pub prefix: LengthPrefix,
    /// Fixed header bytes between the prefix and the message (0 for none).
    #[serde(default)]
    pub header_len: usize,
    /// Whether the length counts the prefix itself (some hosts do).
    #[serde(default)]
    pub length_includes_prefix: bool,
    /// Largest message (header and message, prefix excluded) accepted.
    #[serde(default = "default_max")]
    pub max_frame_bytes: usize,
}

fn default_max() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            prefix: LengthPrefix::Binary2,
            header_len: 0,
            length_includes_prefix: false,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// One decoded frame: the fixed header (possibly empty) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header bytes, e.g. a TPDU.
    pub header: BytesMut,
    /// The message itself.
    pub message: BytesMut,
}

/// Splits a byte stream into frames and writes frames. Holds no buffer.
#[derive(Debug, Clone, Copy)]
pub struct Framer {
    config: FrameConfig,
}

/// A length slot reserved in an output buffer by [`Framer::begin`].
#[derive(Debug)]
#[must_use = "a frame must be finished to write its length"]
pub struct FrameMark {
    start: usize,
}

impl Framer {
    /// A framer with the given settings; refuses settings that cannot work.
    pub fn new(config: FrameConfig) -> Result<Self, CodecError> {
        if config.max_frame_bytes > MAX_FRAME_BYTES_LIMIT {
            return Err(CodecError::Invalid {
                at: Location::Frame,
                reason: "max_frame_bytes is over the 1 MiB limit",
            });
        }
        if config.max_frame_bytes > config.prefix.max_len() {
            return Err(CodecError::Invalid {
                at: Location::Frame,
                reason: "max_frame_bytes is over what the length prefix can express",
            });
        }
        if config.header_len > config.max_frame_bytes {
            return Err(CodecError::Invalid {
                at: Location::Frame,
                reason: "header_len is over max_frame_bytes",
            });
        }
        Ok(Framer { config })
    }

    /// The settings.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// Look at the front of `src` without consuming it: `Ok(None)` when the
    /// frame is not all there yet, otherwise the total bytes the frame takes
    /// (prefix included). Oversize lengths fail here, before any buffering.
    pub fn check(&self, src: &[u8]) -> Result<Option<usize>, CodecError> {
        let width = self.config.prefix.width();
        if src.len() < width {
            return Ok(None);
        }
        let mut len = self.config.prefix.read(&src[..width])?;
        if self.config.length_includes_prefix {
            len = len.checked_sub(width).ok_or(CodecError::BadLengthPrefix {
                at: Location::Frame,
            })?;
        }
        if len > self.config.max_frame_bytes {
            return Err(CodecError::TooLong {
                at: Location::Frame,
                len,
                max: self.config.max_frame_bytes,
            });
        }
        if len < self.config.header_len {
            return Err(CodecError::Truncated {
                at: Location::Header,
                needed: self.config.header_len,
                available: len,
            });
        }
        let total = width + len;
        Ok((src.len() >= total).then_some(total))
    }

    /// Take one whole frame off the front of `src`. `Ok(None)` means "not a
    /// whole frame yet": read more and call again. On error the stream is out
    /// of step and the connection should be closed.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(total) = self.check(src)? else {
            // Make room for the rest of the frame in one go once its size is known.
            if let Some(Ok(len)) = (src.len() >= self.config.prefix.width())
                .then(|| self.config.prefix.read(&src[..self.config.prefix.width()]))
            {
                src.reserve(len.min(self.config.max_frame_bytes));
            }
            return Ok(None);
        };
        src.advance(self.config.prefix.width());
        let mut message = src.split_to(total - self.config.prefix.width());
        let header = message.split_to(self.config.header_len);
        Ok(Some(Frame { header, message }))
    }

    /// Reserve the length prefix and write `header` at the end of `out`; then
    /// append the message and call [`Framer::finish`].
    pub fn begin(&self, header: &[u8], out: &mut BytesMut) -> Result<FrameMark, CodecError> {
        if header.len() != self.config.header_len {
            return Err(CodecError::Invalid {
                at: Location::Header,
                reason: "header length differs from the link's header_len",
            });
        }
        let start = out.len();
        out.put_bytes(0, self.config.prefix.width());
        out.put_slice(header);
        Ok(FrameMark { start })
    }

    /// Write the length of the frame begun at `mark`. A frame over the
    /// maximum is removed from `out` and reported.
    pub fn finish(&self, mark: FrameMark, out: &mut BytesMut) -> Result<(), CodecError> {
        let width = self.config.prefix.width();
        let body = out.len() - mark.start - width;
        if body > self.config.max_frame_bytes {
            out.truncate(mark.start);
            return Err(CodecError::TooLong {
                at: Location::Frame,
                len: body,
                max: self.config.max_frame_bytes,
            });
        }
        let len = if self.config.length_includes_prefix {
            body + width
        } else {
            body
        };
        self.config
            .prefix
            .write(len, &mut out[mark.start..mark.start + width]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer(prefix: LengthPrefix, header_len: usize, max: usize) -> Framer {
        Framer::new(FrameConfig {
            prefix,
            header_len,
            length_includes_prefix: false,
            max_frame_bytes: max,
        })
        .unwrap()
    }

    fn frame_bytes(f: &Framer, header: &[u8], msg: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mark = f.begin(header, &mut out).unwrap();
        out.extend_from_slice(msg);
        f.finish(mark, &mut out).unwrap();
        out
    }

    #[test]
    fn every_prefix_round_trips_byte_by_byte() {
        for prefix in [
            LengthPrefix::Binary2,
            LengthPrefix::Ascii4,
            LengthPrefix::Bcd2,
            LengthPrefix::Binary4,
        ] {
            for header_len in [0usize, 5] {
                let f = framer(prefix, header_len, 8192);
                let header = vec![0x60; header_len];
                let wire = frame_bytes(&f, &header, b"0800hello");
                let mut src = BytesMut::new();
                for (i, b) in wire.iter().enumerate() {
                    assert_eq!(f.decode(&mut src).unwrap(), None, "{prefix:?} at {i}");
                    src.put_u8(*b);
                }
                let frame = f.decode(&mut src).unwrap().unwrap();
                assert_eq!(&frame.message[..], b"0800hello");
                assert_eq!(&frame.header[..], &header[..]);
                assert!(src.is_empty());
            }
        }
    }

    #[test]
    fn known_wire_forms() {
        let msg = [b'x'; 300];
        assert_eq!(
            &frame_bytes(&framer(LengthPrefix::Binary2, 0, 8192), &[], &msg)[..2],
            &[0x01, 0x2c]
        );
        assert_eq!(
            &frame_bytes(&framer(LengthPrefix::Ascii4, 0, 8192), &[], &msg)[..4],
            b"0300"
        );
        assert_eq!(
            &frame_bytes(&framer(LengthPrefix::Bcd2, 0, 8192), &[], &msg)[..2],
            &[0x03, 0x00]
        );
        assert_eq!(
            &frame_bytes(&framer(LengthPrefix::Binary4, 0, 8192), &[], &msg)[..4],
            &[0, 0, 0x01, 0x2c]
        );
    }

    #[test]
    fn oversize_is_refused_before_buffering() {
        let f = framer(LengthPrefix::Binary2, 0, 100);
        // Only the prefix has arrived: the frame is refused already.
        let mut src = BytesMut::from(&[0x00, 101][..]);
        assert!(matches!(
            f.decode(&mut src),
            Err(CodecError::TooLong {
                len: 101,
                max: 100,
                ..
            })
        ));
        // Exactly the maximum is fine.
        let mut src = BytesMut::from(&[0x00, 100][..]);
        src.extend_from_slice(&[b'a'; 100]);
        assert_eq!(f.decode(&mut src).unwrap().unwrap().message.len(), 100);
        let mut out = BytesMut::new();
        let mark = f.begin(&[], &mut out).unwrap();
        out.extend_from_slice(&[0u8; 101]);
        assert!(f.finish(mark, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_prefixes_are_errors() {
        let f = framer(LengthPrefix::Ascii4, 0, 8192);
        for bad in [&b"00a1"[..], b"-001", b" 12 "] {
            let mut src = BytesMut::from(bad);
            assert_eq!(
                f.decode(&mut src),
                Err(CodecError::BadLengthPrefix {
                    at: Location::Frame
                })
            );
        }
        let f = framer(LengthPrefix::Bcd2, 0, 8192);
        let mut src = BytesMut::from(&[0x0a, 0x00][..]);
        assert!(f.decode(&mut src).is_err());
        // A length that cannot even hold the fixed header.
        let f = framer(LengthPrefix::Binary2, 5, 8192);
        let mut src = BytesMut::from(&[0x00, 0x03, 1, 2, 3][..]);
        assert!(matches!(
            f.decode(&mut src),
            Err(CodecError::Truncated { .. })
        ));
        // A prefix that counts itself but is smaller than itself.
        let f = Framer::new(FrameConfig {
            length_includes_prefix: true,
            ..FrameConfig::default()
        })
        .unwrap();
        let mut src = BytesMut::from(&[0x00, 0x01, 1][..]);
        assert!(f.decode(&mut src).is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(Framer::new(FrameConfig {
            prefix: LengthPrefix::Binary4,
            max_frame_bytes: MAX_FRAME_BYTES_LIMIT + 1,
            ..FrameConfig::default()
        })
        .is_err());
        assert!(Framer::new(FrameConfig {
            prefix: LengthPrefix::Ascii4,
            max_frame_bytes: 10_000,
            ..FrameConfig::default()
        })
        .is_err());
    }

    #[test]
    fn short_inputs_are_incomplete_not_errors() {
        let f = framer(LengthPrefix::Binary4, 0, 8192);
        for n in 0..4 {
            let mut src = BytesMut::from(&[0u8, 0, 0, 9][..n]);
            assert_eq!(f.decode(&mut src).unwrap(), None);
        }
    }
}
