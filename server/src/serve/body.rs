//! Request bodies: the framing a request declared, decoded from the connection's buffer, and
//! the body a handler reads, fed by the connection as the handler asks for more.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

/// The longest chunk-size line (size, extensions) or trailer line a chunked body may send.
const MAX_LINE: usize = 4096;
/// The most trailer bytes a chunked body may send (they are read and dropped).
const MAX_TRAILERS: usize = 8192;

/// Why a request body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The client closed the connection before the body was complete.
    #[error("the connection closed before the request body was complete")]
    Incomplete,
    /// Nothing more of the body arrived for a minute.
    #[error("the request body stopped arriving")]
    Stalled,
    /// The chunked encoding was broken.
    #[error("the request body's chunked encoding is malformed")]
    Malformed,
}

/// How a request's body is delimited on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, at this point of its grammar.
    Chunked(Chunked),
}

/// Where a chunked body's decoder is.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many data bytes still to come.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, reading trailer lines (this many bytes so far).
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What decoding the buffered bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A piece of the body.
    Data(Bytes),
    /// More bytes must be read from the connection first.
    NeedMore,
    /// The body is complete; what is left in the buffer belongs to the next request.
    Done,
}

impl Framing {
    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(Chunked::Done))
    }

    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, BodyError> {
        match self {
            Self::Length(0) => Ok(Step::Done),
            Self::Length(remaining) => Ok(take(remaining, buf).map_or(Step::NeedMore, Step::Data)),
            Self::Chunked(state) => state.decode(buf),
        }
    }
}

/// Up to `remaining` bytes from `buf`, none when it is empty.
fn take(remaining: &mut u64, buf: &mut BytesMut) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
    *remaining -= n as u64;
    Some(buf.split_to(n).freeze())
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, BodyError> {
        loop {
            match self {
                Self::Done => return Ok(Step::Done),
                Self::Data(0) => *self = Self::DataEnd,
                Self::Data(remaining) => {
                    return Ok(take(remaining, buf).map_or(Step::NeedMore, Step::Data));
                }
                Self::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Malformed);
                    }
                    buf.advance(2);
                    *self = Self::Size;
                }
                Self::Size => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Self::Trailers(0)
                    } else {
                        Self::Data(size)
                    };
                }
                Self::Trailers(seen) => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Self::Done;
                    } else {
                        *seen += line.len() + 2;
                        if *seen > MAX_TRAILERS {
                            return Err(BodyError::Malformed);
                        }
                    }
                }
            }
        }
    }
}

/// The next CRLF-terminated line (without its CRLF), or none until one has arrived.
fn line(buf: &mut BytesMut) -> Result<Option<BytesMut>, BodyError> {
    let searched = buf.len().min(MAX_LINE + 2);
    match buf[..searched].windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let mut line = buf.split_to(end + 2);
            line.truncate(end);
            // A bare CR or LF (or any control byte) inside a line could end it for a proxy
            // in front and not for us: refused, so both read the same body.
            if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(BodyError::Malformed);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(BodyError::Malformed),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|&b| b == b';')
        .map_or(rest, |semi| &rest[..semi])
        .iter()
        .all(|&b| b == b' ' || b == b'\t');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(BodyError::Malformed);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| BodyError::Malformed)?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::Malformed)
}

/// The body a handler reads: pieces the connection decodes and hands over one at a time.
pub struct RequestBody {
    pieces: mpsc::Receiver<Result<Bytes, BodyError>>,
    /// Bytes still to come, when the request declared a length.
    remaining: Option<u64>,
    /// Told when the handler first asks for the body (the client waits for `100 Continue`).
    wanted: Option<oneshot::Sender<()>>,
}

/// The connection's end of a [`RequestBody`].
pub type BodySender = mpsc::Sender<Result<Bytes, BodyError>>;

impl RequestBody {
    /// A body and the sender the connection feeds it through; with `expect_continue`, also
    /// what tells the connection that the handler wants the body.
    pub fn channel(
        framing: &Framing,
        expect_continue: bool,
    ) -> (BodySender, Option<oneshot::Receiver<()>>, Self) {
        let (sender, pieces) = mpsc::channel(1);
        let remaining = match framing {
            Framing::Length(n) => Some(*n),
            Framing::Chunked(_) => None,
        };
        let (wanted, wanted_rx) = if expect_continue {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let body = Self {
            pieces,
            remaining,
            wanted,
        };
        (sender, wanted_rx, body)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.remaining == Some(0) {
            return Poll::Ready(None);
        }
        if let Some(wanted) = self.wanted.take() {
            let _ = wanted.send(());
        }
        self.pieces.poll_recv(cx).map(|piece| {
            piece.map(|piece| {
                piece.map(|data| {
                    if let Some(remaining) = &mut self.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    Frame::data(data)
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` one byte at a time (the hardest split) and collects the body.
    fn decode_bytewise(wire: &[u8]) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut input = wire.iter();
        loop {
            match framing.decode(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::Done => return Ok((body, buf.to_vec())),
                Step::NeedMore => match input.next() {
                    Some(&b) => buf.extend_from_slice(&[b]),
                    None => return Err(BodyError::Incomplete),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /";
        let (body, rest) = decode_bytewise(wire).expect("valid");
        assert_eq!(body, b"hello 0123456789");
        assert_eq!(rest, b"", "bytes after the body stay unread");
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::from(&wire[..]);
        let mut body = Vec::new();
        while let Step::Data(d) = framing.decode(&mut buf).expect("valid") {
            body.extend_from_slice(&d);
        }
        assert_eq!(body, b"hello 0123456789");
        assert_eq!(&buf[..], b"GET /", "the next request is left in the buffer");
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"x\r\n"[..],            // not hex
            b"\r\n",                  // no size
            b"5\r\nhelloXX",          // no CRLF after the data
            b"5 x\r\nhello\r\n",      // junk after the size
            b"11111111111111111\r\n", // more than 16 hex digits
            b"-1\r\n",                // a sign
            b"5\nhello\r\n",          // a bare LF
            b"5;\nxxxxx\r\n",         // a bare LF in an extension
            b"5;\r\r\nhello\r\n",     // a bare CR in an extension
            b"0\r\nX: a\nb\r\n\r\n",  // a bare LF in a trailer
        ] {
            assert_eq!(
                decode_bytewise(wire).err(),
                Some(BodyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b"5;".as_slice(), &[b'x'; MAX_LINE], b"\r\n"].concat();
        assert_eq!(decode_bytewise(&long).err(), Some(BodyError::Malformed));
    }

    #[test]
    fn a_declared_length_takes_exactly_that_many_bytes() {
        let mut framing = Framing::Length(3);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(framing.decode(&mut buf), Ok(Step::Data(Bytes::from("abc"))));
        assert_eq!(framing.decode(&mut buf), Ok(Step::Done));
        assert_eq!(&buf[..], b"def");
    }
}
