//! Framing (RFC 3261 §7.5, §18.3) and the header-section parser.
//!
//! A message is framed by the empty line that ends its header section
//! (found with `memchr::memmem`) and by Content-Length. Datagrams and streams
//! share [`parse_head`]; they differ only in how the body is delimited:
//! - datagram: Content-Length, when present, must not exceed what arrived,
//!   and octets after the body are ignored (RFC 4475 §3.1.1.8); without it
//!   the body runs to the end of the datagram (§3.4.1);
//! - stream: Content-Length is mandatory and the parser waits for the body.

use super::error::ParseError;
use super::grammar::{self as g, is_token_char};
use super::headers as h;
use super::message::{CoreHeaders, HeaderField, Message, StartLine};
use super::method::Method;
use super::name::HeaderName;
use super::uri::{Uri, UriContext};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use memchr::memmem;
use serde::{Deserialize, Serialize};

/// Size limits, checked before anything is allocated for the part they
/// bound. Configured in `[sip.limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Whole message, header section and body (answered with 513).
    pub max_message_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// One header field after unfolding, name included.
    pub max_line_bytes: usize,
    /// Body size (answered with 513).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_line_bytes: 8_192,
            max_body_bytes: 60_000,
        }
    }
}

/// A parsed header section, waiting for its body.
#[derive(Debug)]
struct Head {
    start: StartLine,
    headers: Vec<HeaderField>,
    core: CoreHeaders,
    /// Content-Length, when present and consistent.
    content_length: Option<usize>,
}

const CRLF: &[u8] = b"\r\n";

/// Number of leading CRLFs (RFC 3261 §7.5: ignore empty lines before the
/// start line; RFC 5626 §4.4.1 keep-alives are CRLFs on streams).
fn leading_crlfs(b: &[u8]) -> usize {
    let mut k = 0;
    while b[k..].starts_with(CRLF) {
        k += 2;
    }
    k
}

/// The end-of-header-section searcher, built once.
fn crlfcrlf() -> &'static memmem::Finder<'static> {
    static F: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));
    &F
}

/// Parses one datagram (UDP) as one SIP message.
pub fn parse_datagram(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if buf.len() > limits.max_message_bytes {
        return Err(ParseError::MessageTooLarge {
            size: buf.len(),
            limit: limits.max_message_bytes,
        });
    }
    let skip = leading_crlfs(&buf);
    let b = &buf[skip..];
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    // RFC 4475 §3.1.2.15's message has no empty line: the end of the
    // datagram ends the header section.
    let (head_end, body_start) = match crlfcrlf().find(b) {
        Some(p) => (skip + p + 2, skip + p + 4),
        None => (buf.len(), buf.len()),
    };
    let head = parse_head(buf.slice(skip..head_end), skip, limits)?;
    let available = buf.len() - body_start;
    let body = match head.content_length {
        Some(n) if n > available => {
            return Err(ParseError::BodyTruncated {
                declared: n,
                available,
            });
        }
        Some(n) => buf.slice(body_start..body_start + n),
        None => buf.slice(body_start..),
    };
    finish(head, body, limits)
}

fn finish(head: Head, body: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if body.len() > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    // RFC 3261 §8.1.1.5: the CSeq method matches the request method.
    if let (StartLine::Request { method, .. }, Some(cseq)) = (&head.start, &head.core.cseq) {
        if &cseq.method != method {
            return Err(ParseError::CSeqMethodMismatch {
                method: method.to_string(),
                cseq: cseq.method.to_string(),
            });
        }
    }
    Ok(Message::from_parts(
        head.start,
        head.headers,
        body,
        head.core,
    ))
}

/// Parses the start line and header fields. `head` runs from the start line
/// to the CRLF that ends the last header line (or the end of the datagram);
/// `base` is its offset in the message, for error offsets.
fn parse_head(head: Bytes, base: usize, limits: &Limits) -> Result<Head, ParseError> {
    let text = match ByteString::try_from(head.clone()) {
        Ok(t) => t,
        Err(_) => {
            let valid = std::str::from_utf8(&head).map_or_else(|e| e.valid_up_to(), |_| 0);
            return Err(ParseError::NotUtf8 {
                offset: base + valid,
            });
        }
    };
    let b = text.as_bytes();

    // Start line.
    let (start_line, mut pos) = next_line(b, 0, base)?;
    let start = parse_start_line(&text, start_line, base)?;

    // Header fields; a line starting with SP/HTAB continues the previous one.
    let mut headers: Vec<HeaderField> = Vec::with_capacity(16);
    let mut content_length: Option<(usize, usize)> = None;
    while pos < b.len() {
        let line_start = pos;
        let (mut line, next) = next_line(b, pos, base)?;
        pos = next;
        if line.is_empty() {
            break;
        }
        if g::is_wsp(b[line.start]) {
            return Err(ParseError::HeaderLine {
                offset: base + line_start,
                reason: "continuation line without a header field",
            });
        }
        // Gather continuation lines.
        let mut folded = false;
        while pos < b.len() && g::is_wsp(b[pos]) {
            let (cont, next) = next_line(b, pos, base)?;
            folded = true;
            line.end = cont.end;
            pos = next;
        }
        if line.end - line.start > limits.max_line_bytes {
            return Err(ParseError::LineTooLong {
                offset: base + line_start,
                limit: limits.max_line_bytes,
            });
        }
        let field = header_field(&text, line, folded, base)?;
        // The first Content-Length does not count towards the limit: the
        // serializer always writes exactly one, so a message at the limit
        // without one still prints to a message within it.
        let free = field.name == HeaderName::ContentLength && content_length.is_none();
        let counted = headers.len() - usize::from(content_length.is_some());
        if !free && counted == limits.max_headers {
            return Err(ParseError::TooManyHeaders {
                limit: limits.max_headers,
                offset: base + line_start,
            });
        }
        if field.name == HeaderName::ContentLength {
            let v = h::decode_content_length(&field.value)
                .map_err(|e| e.in_header(&field.name, field.offset as usize))?
                as usize;
            match content_length {
                Some((prev, _)) if prev != v => {
                    return Err(ParseError::ConflictingContentLength {
                        offset: base + line_start,
                    });
                }
                _ => content_length = Some((v, line_start)),
            }
        }
        headers.push(field);
    }
    let core = Message::decode_core(&headers)?;
    Ok(Head {
        start,
        headers,
        core,
        content_length: content_length.map(|(v, _)| v),
    })
}

/// The line starting at `from` (without its CRLF) and where the next one
/// starts. One `memchr2` pass per line: lines end in CRLF (RFC 3261 §7); a
/// bare CR or a bare LF in the header section is an error. The end of the
/// data also ends a line.
fn next_line(
    b: &[u8],
    from: usize,
    base: usize,
) -> Result<(std::ops::Range<usize>, usize), ParseError> {
    match memchr::memchr2(b'\r', b'\n', &b[from..]).map(|p| from + p) {
        None => Ok((from..b.len(), b.len())),
        Some(i) if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') => Ok((from..i, i + 2)),
        Some(i) if b[i] == b'\n' => Err(ParseError::HeaderLine {
            offset: base + i,
            reason: "line ends in LF without CR",
        }),
        Some(i) => Err(ParseError::HeaderLine {
            offset: base + i,
            reason: "bare CR in header section",
        }),
    }
}

/// `field-name HCOLON field-value`, unfolding continuation lines: each
/// `*WSP CRLF 1*WSP` becomes one SP (RFC 3261 §7.3.1).
fn header_field(
    text: &ByteString,
    line: std::ops::Range<usize>,
    folded: bool,
    base: usize,
) -> Result<HeaderField, ParseError> {
    let b = &text.as_bytes()[line.clone()];
    let name_len = b.iter().position(|&c| !is_token_char(c)).unwrap_or(b.len());
    if name_len == 0 {
        return Err(ParseError::HeaderLine {
            offset: base + line.start,
            reason: "expected a header name",
        });
    }
    let mut k = name_len;
    while k < b.len() && g::is_wsp(b[k]) {
        k += 1;
    }
    if b.get(k) != Some(&b':') {
        return Err(ParseError::HeaderLine {
            offset: base + line.start + k,
            reason: "expected ':' after the header name",
        });
    }
    k += 1;
    // Known names need no ByteString; only extension names keep their spelling.
    let name = HeaderName::lookup(&b[..name_len]).unwrap_or_else(|| {
        HeaderName::Other(text.slice_ref(&text[line.start..line.start + name_len]))
    });
    let raw = &b[k..];
    let value_offset = base + line.start + k;
    let value = if !folded {
        let s = trim_wsp(raw);
        let off = line.start + k + (s.as_ptr() as usize - raw.as_ptr() as usize);
        text.slice_ref(&text[off..off + s.len()])
    } else {
        let mut v = String::with_capacity(raw.len());
        for seg in raw.split(|&c| c == b'\n') {
            let seg = trim_wsp(seg.strip_suffix(b"\r").unwrap_or(seg));
            if seg.is_empty() {
                continue;
            }
            if !v.is_empty() {
                v.push(' ');
            }
            v.push_str(std::str::from_utf8(seg).unwrap_or_default());
        }
        ByteString::from(v)
    };
    Ok(HeaderField {
        name,
        value,
        offset: value_offset as u32,
    })
}

fn trim_wsp(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if g::is_wsp(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if g::is_wsp(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn is_sip_version(s: &[u8]) -> bool {
    // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive, §7.1)
    if s.len() < 7 || !s[..4].eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let v = &s[4..];
    match v.iter().position(|&c| c == b'.') {
        Some(d) => {
            d > 0
                && d + 1 < v.len()
                && v[..d].iter().all(u8::is_ascii_digit)
                && v[d + 1..].iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        Ok(())
    } else {
        Err(ParseError::UnsupportedVersion {
            version: String::from_utf8_lossy(v).into_owned(),
        })
    }
}

/// `Request-Line = Method SP Request-URI SP SIP-Version` or
/// `Status-Line = SIP-Version SP Status-Code SP Reason-Phrase`.
fn parse_start_line(
    text: &ByteString,
    line: std::ops::Range<usize>,
    base: usize,
) -> Result<StartLine, ParseError> {
    let b = &text.as_bytes()[line.clone()];
    let err = |at: usize, reason| ParseError::StartLine {
        offset: base + line.start + at,
        reason,
    };
    if b.is_empty() {
        return Err(err(0, "empty start line"));
    }
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line.
        let sp = memchr::memchr(b' ', b).ok_or_else(|| err(0, "expected SP after SIP-Version"))?;
        let version = &b[..sp];
        if !is_sip_version(version) {
            return Err(err(0, "invalid SIP-Version"));
        }
        check_version(version)?;
        let rest = &b[sp + 1..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        // Status-Code = 3DIGIT, 100 to 699 (RFC 4475 §3.1.2.19).
        if digits != 3 {
            return Err(err(sp + 1, "status code must have three digits"));
        }
        let code =
            (rest[0] - b'0') as u16 * 100 + (rest[1] - b'0') as u16 * 10 + (rest[2] - b'0') as u16;
        if !(100..=699).contains(&code) {
            return Err(err(sp + 1, "status code out of range"));
        }
        let reason_start = match rest.get(3) {
            None => line.start + sp + 4,
            Some(b' ') => line.start + sp + 5,
            Some(_) => return Err(err(sp + 4, "expected SP after the status code")),
        };
        let reason = text.slice_ref(&text[reason_start.min(line.end)..line.end]);
        if reason.bytes().any(|c| c < 0x20 && c != b'\t') {
            return Err(err(sp + 5, "control character in reason phrase"));
        }
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line.
    let m = b.iter().position(|&c| !is_token_char(c)).unwrap_or(b.len());
    if m == 0 {
        return Err(err(0, "expected a method"));
    }
    if b.get(m) != Some(&b' ') {
        return Err(err(m, "expected SP after the method"));
    }
    let spaces = memchr::memchr_iter(b' ', b).count();
    if spaces != 2 {
        // RFC 4475 §3.1.2.7-10: say which whitespace rule is broken.
        let reason = if b.ends_with(b" ") || b.ends_with(b"\t") {
            "trailing whitespace in Request-Line"
        } else if memmem::find(b, b"  ").is_some() {
            "more than one SP between Request-Line elements"
        } else if spaces > 2 {
            "whitespace inside the Request-URI"
        } else {
            "expected Method SP Request-URI SP SIP-Version"
        };
        return Err(err(m, reason));
    }
    let uri_start = m + 1;
    let uri_end = uri_start + memchr::memchr(b' ', &b[uri_start..]).unwrap_or(0);
    let version = &b[uri_end + 1..];
    if !is_sip_version(version) {
        return Err(err(uri_end + 1, "invalid SIP-Version"));
    }
    check_version(version)?;
    let method = Method::from_token(&text.slice_ref(&text[line.start..line.start + m]));
    let uri_text = text.slice_ref(&text[line.start + uri_start..line.start + uri_end]);
    if uri_text.starts_with('<') {
        return Err(err(
            uri_start,
            "Request-URI must not be enclosed in '<' '>'",
        ));
    }
    let uri = Uri::parse_bs(&uri_text, UriContext::RequestUri)
        .map_err(|e| err(uri_start + e.at, e.reason))?;
    Ok(StartLine::Request { method, uri })
}

/// Incremental parser for stream transports (TCP, TLS): feed it bytes as
/// they arrive, take complete messages out.
///
/// Invariant: `buf` holds only bytes not yet returned as a message.
#[derive(Debug)]
pub struct StreamParser {
    buf: BytesMut,
    limits: Limits,
    /// Where to resume the search for CRLFCRLF (avoids rescanning).
    scan_from: usize,
    /// A parsed header section waiting for `usize` body bytes.
    pending: Option<(Head, usize)>,
    /// The header section that made `next_message` fail, for an answer.
    failed: Option<Bytes>,
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            buf: BytesMut::with_capacity(4096),
            limits,
            scan_from: 0,
            pending: None,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The header section of the message that made `next_message` fail
    /// (so a request can still be answered with 400 before closing).
    pub fn take_failed(&mut self) -> Option<Bytes> {
        self.failed.take()
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether part of a message is buffered: bytes other than the
    /// keep-alive CRLFs between messages (RFC 5626 §4.4.1), which
    /// `next_message` drops. Meaningful after `next_message` returned
    /// `Ok(None)`.
    pub fn in_message(&self) -> bool {
        self.pending.is_some() || !self.buf.is_empty()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. After
    /// an error the stream cannot be re-synchronised: close the connection
    /// (RFC 4475 §3.1.2.3, §3.3.9).
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        if self.pending.is_none() {
            // Keep-alive CRLFs between messages (RFC 5626 §4.4.1).
            let skip = leading_crlfs(&self.buf);
            if skip > 0 {
                self.buf.advance(skip);
                self.scan_from = 0;
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            let from = self.scan_from.saturating_sub(3);
            let Some(p) = crlfcrlf().find(&self.buf[from..]).map(|p| from + p) else {
                self.scan_from = self.buf.len();
                if self.buf.len() > self.limits.max_message_bytes {
                    return Err(ParseError::MessageTooLarge {
                        size: self.buf.len(),
                        limit: self.limits.max_message_bytes,
                    });
                }
                return Ok(None);
            };
            self.scan_from = 0;
            if p + 4 > self.limits.max_message_bytes {
                return Err(ParseError::MessageTooLarge {
                    size: p + 4,
                    limit: self.limits.max_message_bytes,
                });
            }
            let head_bytes = self.buf.split_to(p + 4).freeze();
            let head = match parse_head(head_bytes.slice(..p + 2), 0, &self.limits) {
                Ok(h) => h,
                Err(e) => {
                    self.failed = Some(head_bytes);
                    return Err(e);
                }
            };
            let Some(len) = head.content_length else {
                return Err(ParseError::MissingContentLength);
            };
            if p + 4 + len > self.limits.max_message_bytes {
                return Err(ParseError::MessageTooLarge {
                    size: p + 4 + len,
                    limit: self.limits.max_message_bytes,
                });
            }
            self.pending = Some((head, len));
        }
        let Some((_, len)) = &self.pending else {
            return Ok(None);
        };
        if self.buf.len() < *len {
            return Ok(None);
        }
        let len = *len;
        let (head, _) = self.pending.take().expect("pending head present");
        let body = self.buf.split_to(len).freeze();
        finish(head, body, &self.limits).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:gw.example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:gw.example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nabcd";

    #[test]
    fn datagram_basic() {
        let m = parse_datagram(Bytes::from_static(OPTIONS), &Limits::default()).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.body().as_ref(), b"abcd");
        assert_eq!(m.call_id(), Some("c1"));
        assert_eq!(m.cseq().unwrap().seq, 1);
    }

    #[test]
    fn stream_split_and_keepalive() {
        let mut data = b"\r\n\r\n".to_vec();
        data.extend_from_slice(OPTIONS);
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(OPTIONS);
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        for chunk in data.chunks(7) {
            p.push(chunk);
            while let Some(m) = p.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].body().as_ref(), b"abcd");
    }

    #[test]
    fn stream_requires_content_length() {
        let mut p = StreamParser::new(Limits::default());
        p.push(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(
            p.next_message().unwrap_err(),
            ParseError::MissingContentLength
        );
    }

    #[test]
    fn limits_enforced() {
        let small = Limits {
            max_message_bytes: 100,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(OPTIONS), &small),
            Err(ParseError::MessageTooLarge { .. })
        ));
        let few = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(OPTIONS), &few),
            Err(ParseError::TooManyHeaders { .. })
        ));
        let short = Limits {
            max_line_bytes: 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(OPTIONS), &short),
            Err(ParseError::LineTooLong { .. })
        ));
        let nobody = Limits {
            max_body_bytes: 2,
            ..Limits::default()
        };
        assert!(matches!(
            parse_datagram(Bytes::from_static(OPTIONS), &nobody),
            Err(ParseError::BodyTooLarge { .. })
        ));
        let mut p = StreamParser::new(small);
        p.push(&[b'A'; 150]);
        assert!(matches!(
            p.next_message(),
            Err(ParseError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn header_limit_leaves_room_for_content_length() {
        // Found by the fuzzer: 128 fields without Content-Length must print
        // (with Content-Length added) to a message that parses again.
        let mut m = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        for _ in 0..128 {
            m.extend_from_slice(b"N:\r\n");
        }
        m.extend_from_slice(b"\r\n");
        let limits = Limits::default();
        let parsed = parse_datagram(Bytes::from(m), &limits).unwrap();
        let again = parse_datagram(parsed.to_bytes(), &limits).expect("reparses");
        assert_eq!(again.headers().len(), 129);
        // Repeated Content-Lengths still count: 1 free + 128 counted is
        // the most.
        let mut m = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        for _ in 0..130 {
            m.extend_from_slice(b"l: 0\r\n");
        }
        m.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_datagram(Bytes::from(m), &limits),
            Err(ParseError::TooManyHeaders { .. })
        ));
    }

    #[test]
    fn bare_lf_and_cr_rejected() {
        let m = b"OPTIONS sip:a@b SIP/2.0\nCSeq: 1 OPTIONS\r\n\r\n";
        assert!(matches!(
            parse_datagram(Bytes::from_static(m), &Limits::default()),
            Err(ParseError::HeaderLine { .. })
        ));
        let m = b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1\rOPTIONS\r\n\r\n";
        assert!(matches!(
            parse_datagram(Bytes::from_static(m), &Limits::default()),
            Err(ParseError::HeaderLine { .. })
        ));
    }
}
