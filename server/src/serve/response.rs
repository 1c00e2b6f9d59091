//! Writing responses: the status line and headers, then the body with the framing HTTP/1.1
//! needs (its length when known, chunks when not).

use std::{future::poll_fn, io::Write as _, pin::Pin, time::SystemTime};

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Response, StatusCode, Version, header};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::request::Refusal;

/// Body bytes gathered before they are written (small answers go out in one write).
const WRITE_AT: usize = 64 * 1024;

/// What the request asked that shapes the response.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// The request's HTTP version.
    pub version: Version,
    /// A `HEAD` request: headers only.
    pub head_only: bool,
    /// Whether the connection stays open after this response, if the response allows.
    pub keep_alive: bool,
}

/// Writes `response`; true when the connection can carry another request.
pub async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    response: Response<Body>,
    asked: Asked,
) -> std::io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let declared = declared_length(&parts.headers);
    let bodiless = asked.head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = if bodiless {
        None
    } else {
        body.size_hint().exact().or(declared)
    };
    let chunked = !bodiless && length.is_none() && asked.version == Version::HTTP_11;
    // A handler may ask for the connection to close after its answer.
    let closing = parts.headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    });
    let keep_alive = asked.keep_alive && !closing && (bodiless || length.is_some() || chunked);

    let mut out = Vec::with_capacity(512);
    status_line(&mut out, status);
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        header_line(&mut out, name.as_str(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        header_line(
            &mut out,
            "date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    if bodiless {
        // A HEAD answer or a 304 tells the length the full answer would have.
        if let Some(n) = declared.filter(|_| asked.head_only || status == StatusCode::NOT_MODIFIED)
        {
            header_line(&mut out, "content-length", n.to_string().as_bytes());
        }
    } else if let Some(n) = length {
        header_line(&mut out, "content-length", n.to_string().as_bytes());
    } else if chunked {
        header_line(&mut out, "transfer-encoding", b"chunked");
    }
    if !keep_alive {
        header_line(&mut out, "connection", b"close");
    } else if asked.version == Version::HTTP_10 {
        header_line(&mut out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        io.write_all(&out).await?;
        return Ok(keep_alive);
    }

    let mut sent: u64 = 0;
    loop {
        let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match next.now_or_never() {
            Some(frame) => frame,
            None => {
                // The body makes the client wait: send what is ready first.
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(error)) => {
                // The answer cannot be completed: cut the connection so the client sees it.
                tracing::warn!(%error, "a response body failed midway");
                io.write_all(&out).await?;
                return Ok(false);
            }
        };
        let data = match length {
            Some(n) if sent + data.len() as u64 > n => {
                tracing::warn!(declared = n, "a response body is longer than it declared");
                let fits = usize::try_from(n - sent).unwrap_or(data.len());
                out.extend_from_slice(&data[..fits]);
                io.write_all(&out).await?;
                return Ok(false);
            }
            _ => data,
        };
        sent += data.len() as u64;
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        append(io, &mut out, data).await?;
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    io.write_all(&out).await?;
    Ok(keep_alive && length.is_none_or(|n| n == sent))
}

/// Adds `data` to what is gathered, writing it out when large.
async fn append<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    data: Bytes,
) -> std::io::Result<()> {
    if out.len() + data.len() <= WRITE_AT {
        out.extend_from_slice(&data);
        return Ok(());
    }
    io.write_all(out).await?;
    out.clear();
    io.write_all(&data).await
}

/// Writes the answer to a refused request; the connection closes after it.
pub async fn refuse<W: AsyncWrite + Unpin>(io: &mut W, refusal: &Refusal) -> std::io::Result<()> {
    let body =
        serde_json::json!({ "errcode": refusal.errcode, "error": refusal.message }).to_string();
    let mut out = Vec::with_capacity(256 + body.len());
    status_line(&mut out, refusal.status);
    header_line(&mut out, "content-type", b"application/json");
    header_line(
        &mut out,
        "content-length",
        body.len().to_string().as_bytes(),
    );
    header_line(
        &mut out,
        "date",
        httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
    );
    header_line(&mut out, "connection", b"close");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    io.write_all(&out).await
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `Content-Length` a handler set, when it is one plain number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_LENGTH)?.to_str().ok()?;
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
}
