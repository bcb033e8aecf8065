//! Framing: the header view over untrusted bytes, encoding, and a streaming decoder.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::{MsgType, WireError};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SESA";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 12;

/// Bounds on what a peer may send. Every limit is explicit.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest payload accepted (default 16 MiB); a larger announced length closes
    /// the connection before anything is buffered.
    pub frame_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max: 16 << 20,
        }
    }
}

/// A parsed, validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub msg_type: MsgType,
    /// The payload's length.
    pub len: u32,
}

impl Header {
    /// Parses and validates a header from untrusted bytes.
    ///
    /// # Errors
    /// Bad magic, version, flags or type, or a length above `limits.frame_max`.
    pub fn new_checked(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, WireError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if bytes[4] != VERSION {
            return Err(WireError::BadVersion(bytes[4]));
        }
        if bytes[5] != 0 {
            return Err(WireError::BadFlags(bytes[5]));
        }
        let msg_type = MsgType::from_u16(u16::from_le_bytes([bytes[6], bytes[7]]))?;
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if len > limits.frame_max {
            return Err(WireError::TooLarge {
                len: len.into(),
                max: limits.frame_max,
            });
        }
        Ok(Header { msg_type, len })
    }

    /// Writes the header.
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = 0;
        out[6..8].copy_from_slice(&(self.msg_type as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
    }
}

/// Appends one frame carrying `msg` to `out` (so many frames can share one write).
///
/// # Errors
/// [`WireError::Encode`] if the message exceeds `limits.frame_max`; `out` is then left
/// as it was.
pub fn encode<T: Serialize>(
    msg_type: MsgType,
    msg: &T,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let encoded = postcard::to_extend(msg, core::mem::take(out));
    *out = match encoded {
        Ok(v) => v,
        Err(_) => {
            // `to_extend` consumed the buffer; only an allocation failure gets here, and
            // that aborts first. Keep the contract anyway.
            return Err(WireError::Encode {
                msg_type,
                reason: "serialisation failed",
            });
        }
    };
    let len = out.len() - start - HEADER_LEN;
    let Some(len) = u32::try_from(len).ok().filter(|l| *l <= limits.frame_max) else {
        out.truncate(start);
        return Err(WireError::Encode {
            msg_type,
            reason: "message larger than the frame limit",
        });
    };
    let mut header = [0u8; HEADER_LEN];
    Header { msg_type, len }.emit(&mut header);
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(())
}

/// A frame borrowed from a [`FrameDecoder`]'s buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    /// What the payload is.
    pub msg_type: MsgType,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decodes the payload as a message of type `T`, borrowing from the frame.
    ///
    /// # Errors
    /// [`WireError::Malformed`] if the payload is not a valid `T` (trailing bytes
    /// included).
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, WireError> {
        let malformed = |reason| WireError::Malformed {
            msg_type: self.msg_type,
            reason,
        };
        let (msg, rest) = postcard::take_from_bytes(self.payload)
            .map_err(|_| malformed("not a valid message"))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the message"));
        }
        Ok(msg)
    }
}

/// Splits a byte stream into frames. Feed it what the socket gave; take frames out.
///
/// A bad header is reported as soon as its 12 bytes are in, before the payload is
/// buffered: an oversize length never makes the decoder allocate for it.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    limits: Limits,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            limits,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            // Reclaim consumed space now and then, without moving bytes on every frame.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered.
    ///
    /// # Errors
    /// A bad header: the stream cannot be trusted any more and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        let available = &self.buf[self.pos..];
        let Some(header) = available.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::new_checked(header, &self.limits)?;
        let end = HEADER_LEN + header.len as usize;
        if available.len() < end {
            return Ok(None);
        }
        let start = self.pos + HEADER_LEN;
        self.pos += end;
        Ok(Some(Frame {
            msg_type: header.msg_type,
            payload: &self.buf[start..start + header.len as usize],
        }))
    }

    /// Changes the limits from the next frame on (a connection uses tight limits until
    /// the peer is authenticated).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}
