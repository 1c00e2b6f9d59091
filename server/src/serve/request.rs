//! Request heads: the request line and headers, parsed out of the connection's buffer into an
//! `http::Request`, with what they say about the body and the connection.

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};

use super::body::{Chunked, Framing};

/// The largest request head (request line and headers) read, as most reverse proxies allow.
pub const MAX_HEAD: usize = 8192;
/// The most header fields a request may have.
const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    /// The request, without its body.
    pub request: Request<()>,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the client will send another request on this connection.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// A request refused before any handler sees it; the connection closes after the answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Matrix errcode of the JSON body.
    pub errcode: &'static str,
    /// Why, for the client's developer.
    pub message: &'static str,
}

impl Refusal {
    const fn bad(message: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            errcode: "M_UNKNOWN",
            message,
        }
    }
    /// The head did not arrive complete in time.
    pub const TIMEOUT: Self = Self {
        status: StatusCode::REQUEST_TIMEOUT,
        errcode: "M_UNKNOWN",
        message: "The request head did not arrive in time",
    };
    const TOO_LARGE: Self = Self {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        errcode: "M_TOO_LARGE",
        message: "The request head (request line and headers) is larger than 8 KiB",
    };
}

/// Parses a complete head off the front of `buf`, or none until one has arrived.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Head>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(Refusal::TOO_LARGE),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Refusal::TOO_LARGE),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TOO_LARGE),
        Err(httparse::Error::Version) => {
            return Err(Refusal {
                status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                errcode: "M_UNKNOWN",
                message: "Only HTTP/1.0, HTTP/1.1 and HTTP/2 with prior knowledge are served",
            });
        }
        Err(_) => return Err(Refusal::bad("The request line or a header is malformed")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::bad("The request method is malformed"))?;
    let uri = Uri::try_from(parsed.path.unwrap_or_default())
        .map_err(|_| Refusal::bad("The request target is malformed"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Refusal::bad("A header name is malformed"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Refusal::bad("A header value is malformed"))?;
        headers.append(name, value);
    }
    buf.advance(len);

    let framing = framing(&headers, version)?;
    let keep_alive = if version == Version::HTTP_11 {
        !has_token(&headers, header::CONNECTION, "close")
    } else {
        has_token(&headers, header::CONNECTION, "keep-alive")
    };
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// The body's framing; a request that could be read two ways is refused (request smuggling).
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Refusal> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Refusal::bad(
                "A request may not have both Transfer-Encoding and Content-Length",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(Refusal::bad("HTTP/1.0 has no Transfer-Encoding"));
        }
        let mut codings = list(headers, header::TRANSFER_ENCODING);
        return match (codings.next(), codings.next()) {
            (Some(coding), None) if coding.eq_ignore_ascii_case("chunked") => {
                Ok(Framing::Chunked(Chunked::Size))
            }
            _ => Err(Refusal {
                status: StatusCode::NOT_IMPLEMENTED,
                errcode: "M_UNKNOWN",
                message: "The only transfer coding accepted is chunked",
            }),
        };
    }
    let mut length = None;
    for value in list(headers, header::CONTENT_LENGTH) {
        let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .ok_or(Refusal::bad("Content-Length is not a number"))?;
        if length.is_some_and(|known| known != parsed) {
            return Err(Refusal::bad("Content-Length is given twice, differently"));
        }
        length = Some(parsed);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// The comma-separated elements of every `name` field, trimmed; values that are not text count
/// as one element that matches nothing.
fn list(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    list(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Refusal> {
        parse(&mut BytesMut::from(text))
    }

    #[test]
    fn heads_say_how_the_body_and_connection_go() {
        let mut buf = BytesMut::from("POST /a?b=c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET");
        let parsed = parse(&mut buf).expect("valid").expect("complete");
        assert_eq!(parsed.request.method(), Method::POST);
        assert_eq!(parsed.request.uri(), "/a?b=c");
        assert_eq!(parsed.framing, Framing::Length(3));
        assert!(parsed.keep_alive && !parsed.expect_continue);
        assert_eq!(&buf[..], b"xyzGET", "the body stays in the buffer");

        let chunked = head("PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(chunked.framing, Framing::Chunked(Chunked::Size));
        assert!(chunked.expect_continue && !chunked.keep_alive);

        let old = head("GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!old.keep_alive, "HTTP/1.0 closes unless it asks otherwise");
        let old = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(old.keep_alive);
        let same = head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(same.framing, Framing::Length(5));
        assert!(
            head("GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        for (text, status) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
            ("GET / HTTP/3.0\r\n\r\n", 505),
        ] {
            let refusal = head(text).expect_err(text);
            assert_eq!(refusal.status.as_u16(), status, "{text}");
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&big).expect_err("too large").status.as_u16(), 431);
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&partial).expect_err("too large").status.as_u16(), 431);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(head(&many).expect_err("too many").status.as_u16(), 431);
    }
}
