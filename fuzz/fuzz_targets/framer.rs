//! Random bytes through `Framer::decode`, for every length-prefix kind.
//!
//! Input layout: byte 0 picks the prefix kind (bits 0-1), whether the length
//! counts the prefix (bit 2) and the header length (bits 3-5, 0..=7); byte 1
//! picks the maximum frame size (small, so that max and max+1 are reachable;
//! 255 means the prefix's own maximum, capped at [`MAX_BIG_FRAME`]); byte 2
//! picks how the stream is cut into reads. The rest is the stream.
//!
//! Oracles, beyond "never panics":
//! - a frame's header is exactly `header_len` bytes, and header + message is
//!   at most `max_frame_bytes`;
//! - every frame consumed exactly prefix + header + message bytes, and
//!   writing it back with `begin`/`finish` gives those same bytes;
//! - feeding the stream in small reads gives the same frames and the same
//!   final error as feeding it all at once (`Ok(None)` is never an error and
//!   an error never depends on how the bytes arrived).

#![no_main]

use bytes::BytesMut;
use fps_codecs::framing::{Frame, FrameConfig, Framer, LengthPrefix};
use fps_codecs::CodecError;
use libfuzzer_sys::fuzz_target;

/// Frames per input at most: every frame is at least one prefix long and the
/// input is bounded, but keep the loop's bound explicit.
const MAX_FRAMES: usize = 1 << 16;

/// Cap on "the prefix's own maximum": `Binary4` would allow 4 GiB, and
/// `decode` reserves the announced length up front, so every such input
/// would cost a 4 GiB allocation and stall the fuzzer. (Whether a link may
/// be configured that large is a config-validation question, not the
/// framer's.)
const MAX_BIG_FRAME: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [kind, max_sel, cut, stream @ ..] = data else {
        return;
    };
    let prefix = match kind & 3 {
        0 => LengthPrefix::Binary2,
        1 => LengthPrefix::Ascii4,
        2 => LengthPrefix::Bcd2,
        _ => LengthPrefix::Binary4,
    };
    let max_frame_bytes = match *max_sel {
        255 => prefix.max_len().min(MAX_BIG_FRAME),
        n => usize::from(n),
    };
    let config = FrameConfig {
        prefix,
        header_len: usize::from((kind >> 3) & 7),
        length_includes_prefix: kind & 4 != 0,
        max_frame_bytes,
    };
    let framer = match Framer::new(config) {
        Ok(f) => f,
        Err(_) => {
            assert!(
                config.header_len > config.max_frame_bytes,
                "valid config refused: {config:?}"
            );
            return;
        }
    };

    let whole = decode_all(&framer, stream, stream.len().max(1));
    let step = usize::from(cut % 7) + 1;
    let chunked = decode_all(&framer, stream, step);
    assert_eq!(
        whole, chunked,
        "result depends on how the stream was cut (step {step})"
    );
});

/// Feed `stream` `step` bytes at a time, decoding until `Ok(None)` after each
/// read, until an error or the end; returns the frames and the final error.
fn decode_all(framer: &Framer, stream: &[u8], step: usize) -> (Vec<Frame>, Option<CodecError>) {
    let config = *framer.config();
    let width = config.prefix.width();
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    loop {
        loop {
            assert!(frames.len() <= MAX_FRAMES);
            let before = src.len();
            match framer.decode(&mut src) {
                Ok(Some(frame)) => {
                    check_frame(
                        framer,
                        &frame,
                        &stream[consumed..consumed + before - src.len()],
                    );
                    consumed += before - src.len();
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(src.len(), before, "Ok(None) consumed input");
                    // Not a whole frame yet: either the prefix is incomplete, or the
                    // announced frame is longer than what is buffered.
                    if src.len() >= width {
                        assert_eq!(framer.check(&src), Ok(None), "check and decode disagree");
                    }
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
        if fed == stream.len() {
            return (frames, None);
        }
        let n = step.min(stream.len() - fed);
        src.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
}

fn check_frame(framer: &Framer, frame: &Frame, wire: &[u8]) {
    let config = framer.config();
    assert_eq!(frame.header.len(), config.header_len, "header length");
    let body = frame.header.len() + frame.message.len();
    assert!(
        body <= config.max_frame_bytes,
        "frame of {body} bytes over max {}",
        config.max_frame_bytes
    );
    assert_eq!(wire.len(), config.prefix.width() + body, "bytes consumed");
    // Writing the frame back gives exactly the bytes it was read from.
    let mut out = BytesMut::new();
    let mark = framer
        .begin(&frame.header, &mut out)
        .expect("header of the right length");
    out.extend_from_slice(&frame.message);
    framer
        .finish(mark, &mut out)
        .expect("a decoded frame is within max");
    assert_eq!(&out[..], wire, "re-encoded frame differs");
}
