//! `message/cpim` (RFC 3862, Common Presence and Instant Messaging: Message
//! Format).
//!
//! Layout (RFC 3862 §3): message headers (§3.2, §4: `Name: value`, optionally
//! `Prefix.Name: value` after an `NS:` declaration, or `Name:;lang=xx value`),
//! a blank line, the MIME content headers of the encapsulated entity
//! (RFC 2045; `Content-Type` at least), a blank line, the encapsulated body.
//! In SIP the outer `Content-Type: message/cpim` is the SIP header; if a
//! body nevertheless starts with that MIME header block (as in the §5.1
//! example's `m:` lines: only `Content-*`/`MIME-Version` headers, with
//! `Content-Type: message/cpim`), that block is skipped.
//!
//! Decisions:
//! * **Line ends:** header lines must end in CRLF (RFC 3862 §3.1). A bare LF
//!   in either header section is rejected with [`CpimError::BareLf`]; no
//!   deployed sender of LF-only message/cpim was identified, and accepting it
//!   would make the "exactly as carried" body boundary ambiguous. The body is
//!   opaque and may contain anything.
//! * Message headers may not be folded (§3.1: one line each); MIME content
//!   headers may (RFC 5322 §2.2.3 unfolding: the CRLF is removed).
//! * Header values are trimmed of surrounding whitespace; a `;lang=` or other
//!   parameter stays at the start of the value (`Subject:;lang=fr x` →
//!   `(Subject, ";lang=fr x")`). Names are kept as received.
//! * [`CpimMessage::header`] matches names ASCII-case-insensitively for
//!   convenience, although RFC 3862 §3.1 says names are case-sensitive; use
//!   [`CpimMessage::headers`] for exact matching.
//! * The body is a zero-copy slice of the input (`Bytes::slice`); nothing is
//!   rewritten (RFC 3862 §3: processors MUST preserve all octets).

use bytes::Bytes;

use super::BodyError;

/// Media type of RFC 3862 messages.
pub const CONTENT_TYPE: &str = "message/cpim";

/// Why a message/cpim body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpimError {
    #[error("message/cpim: the {section} headers are not ended by a blank line (CRLF CRLF)")]
    MissingBlankLine { section: &'static str },
    #[error(
        "message/cpim: bare LF line end at offset {offset}; RFC 3862 §3.1 requires CRLF in the header sections"
    )]
    BareLf { offset: usize },
    #[error("message/cpim: malformed header line at offset {offset}: {reason}")]
    BadHeader { offset: usize, reason: &'static str },
    #[error("message/cpim: the encapsulated entity has no Content-Type")]
    MissingContentType,
    #[error("message/cpim: message/cpim nested more than {limit} levels deep")]
    TooDeep { limit: usize },
}

/// A parsed message/cpim body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimMessage {
    /// Message headers (From, To, DateTime, NS, Require, Subject, ...) in
    /// order, names as received.
    pub headers: Vec<(String, String)>,
    /// MIME content headers (Content-Type, Content-ID, ...).
    pub content_headers: Vec<(String, String)>,
    /// Value of Content-Type in `content_headers`.
    pub content_type: Option<String>,
    /// The encapsulated body, exactly as carried.
    pub body: Bytes,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Message,
    Content,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Message => "message",
            Section::Content => "MIME content",
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// Reads one header section starting at `start`; returns the headers and
/// the offset just after the terminating blank line.
fn read_section(
    buf: &[u8],
    start: usize,
    section: Section,
) -> Result<(Vec<(String, String)>, usize), CpimError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = start;
    loop {
        let Some(rel) = memchr::memchr(b'\n', &buf[pos..]) else {
            return Err(CpimError::MissingBlankLine {
                section: section.name(),
            });
        };
        let nl = pos + rel;
        if nl == pos || buf[nl - 1] != b'\r' {
            return Err(CpimError::BareLf { offset: nl });
        }
        let line = &buf[pos..nl - 1];
        let line_start = pos;
        pos = nl + 1;
        if line.is_empty() {
            return Ok((headers, pos));
        }
        let bad = |reason| CpimError::BadHeader {
            offset: line_start,
            reason,
        };
        let line = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
        if line.contains('\r') {
            return Err(bad("stray CR"));
        }
        if line.starts_with([' ', '\t']) {
            match (section, headers.last_mut()) {
                (Section::Content, Some((_, value))) => {
                    value.push_str(line);
                    let trimmed = value.trim_end().len();
                    value.truncate(trimmed);
                    continue;
                }
                (Section::Content, None) => return Err(bad("continuation line before any header")),
                (Section::Message, _) => {
                    return Err(bad(
                        "folded line (not allowed in message/cpim message headers)",
                    ));
                }
            }
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad("no colon"))?;
        if name.is_empty() || !name.bytes().all(is_name_char) {
            return Err(bad("invalid header name"));
        }
        if name.starts_with('.') || name.ends_with('.') {
            return Err(bad("invalid header name prefix"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

fn essence(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

fn is_outer_mime_block(headers: &[(String, String)]) -> bool {
    let mime_only = headers.iter().all(|(n, _)| {
        n.len() >= 8 && n[..8].eq_ignore_ascii_case("content-")
            || n.eq_ignore_ascii_case("mime-version")
    });
    mime_only
        && headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("content-type") && essence(v).eq_ignore_ascii_case(CONTENT_TYPE)
        })
}

impl CpimMessage {
    /// Parses a message/cpim body; `body` is a slice of `bytes` (no copy).
    pub fn parse(bytes: &Bytes) -> Result<CpimMessage, BodyError> {
        let buf: &[u8] = bytes;
        let (mut headers, mut pos) = read_section(buf, 0, Section::Message)?;
        if !headers.is_empty() && is_outer_mime_block(&headers) {
            (headers, pos) = read_section(buf, pos, Section::Message)?;
        }
        let (content_headers, body_start) = read_section(buf, pos, Section::Content)?;
        let content_type = content_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        Ok(CpimMessage {
            headers,
            content_headers,
            content_type,
            body: bytes.slice(body_start..),
        })
    }

    /// First message header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All message headers with this name (ASCII case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First MIME content header with this name (ASCII case-insensitive).
    pub fn content_header(&self, name: &str) -> Option<&str> {
        self.content_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const PIDF: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:piglet@100akerwood.com\">\r\n\
  <tuple id=\"a1\"><status><basic>open</basic></status></tuple>\r\n\
</presence>\r\n";

    pub(crate) fn wrapped_pidf() -> (Bytes, &'static str) {
        let msg = format!(
            "From: MR SANDERS <im:piglet@100akerwood.com>\r\n\
To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n\
DateTime: 2000-12-13T13:40:00-08:00\r\n\
Subject: the weather will be fine today\r\n\
Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n\
NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n\
Require: MyFeatures.VitalMessageOption\r\n\
MyFeatures.VitalMessageOption: Confirmation-requested\r\n\
\r\n\
Content-Type: application/pidf+xml; charset=utf-8\r\n\
Content-ID: <1234567890@foo.com>\r\n\
\r\n{PIDF}"
        );
        (Bytes::from(msg), PIDF)
    }

    #[test]
    fn rfc3862_style_message() {
        let (bytes, inner) = wrapped_pidf();
        let m = CpimMessage::parse(&bytes).unwrap();
        assert_eq!(m.headers.len(), 8);
        assert_eq!(
            m.header("From"),
            Some("MR SANDERS <im:piglet@100akerwood.com>")
        );
        assert_eq!(
            m.header("to"),
            Some("Depressed Donkey <im:eeyore@100akerwood.com>")
        );
        assert_eq!(m.header("DateTime"), Some("2000-12-13T13:40:00-08:00"));
        assert_eq!(
            m.header("NS"),
            Some("MyFeatures <mid:MessageFeatures@id.foo.com>")
        );
        assert_eq!(
            m.header_all("Subject").collect::<Vec<_>>(),
            [
                "the weather will be fine today",
                ";lang=fr beau temps prevu pour aujourd'hui"
            ]
        );
        assert_eq!(
            m.header("MyFeatures.VitalMessageOption"),
            Some("Confirmation-requested")
        );
        assert_eq!(m.header("cc"), None);
        assert_eq!(
            m.content_type.as_deref(),
            Some("application/pidf+xml; charset=utf-8")
        );
        assert_eq!(m.content_header("content-id"), Some("<1234567890@foo.com>"));
        assert_eq!(&m.body[..], inner.as_bytes());
        // Zero copy: the body points into the input buffer.
        let start = bytes.len() - inner.len();
        assert_eq!(m.body.as_ptr(), bytes[start..].as_ptr());
    }

    #[test]
    fn outer_mime_header_block_is_skipped() {
        let bytes = Bytes::from_static(
            b"Content-type: Message/CPIM\r\n\r\nFrom: <im:a@b>\r\nTo: <im:c@d>\r\n\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
        );
        let m = CpimMessage::parse(&bytes).unwrap();
        assert_eq!(m.header("From"), Some("<im:a@b>"));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(&m.body[..], b"hi\r\n");
    }

    #[test]
    fn folded_content_headers_and_empty_parts() {
        let bytes = Bytes::from_static(
            b"From: <im:a@b>\r\n\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\r\n",
        );
        let m = CpimMessage::parse(&bytes).unwrap();
        assert_eq!(m.content_type.as_deref(), Some("text/plain; charset=utf-8"));
        assert!(m.body.is_empty());
        // No content headers at all: no content type.
        let m = CpimMessage::parse(&Bytes::from_static(b"From: <im:a@b>\r\n\r\n\r\nbody")).unwrap();
        assert_eq!(m.content_type, None);
        assert_eq!(&m.body[..], b"body");
    }

    #[test]
    fn malformed() {
        let err = |b: &'static [u8]| CpimMessage::parse(&Bytes::from_static(b)).unwrap_err();
        assert_eq!(
            err(b"From: <im:a@b>\r\nTo: <im:c@d>\r\n"),
            BodyError::Cpim(CpimError::MissingBlankLine { section: "message" })
        );
        assert_eq!(
            err(b"From: <im:a@b>\r\n\r\nContent-Type: text/plain\r\nbody\r\n"),
            BodyError::Cpim(CpimError::BadHeader {
                offset: 44,
                reason: "no colon"
            })
        );
        assert_eq!(
            err(b"From: <im:a@b>\r\n\r\nContent-Type: text/plain\r\nbody"),
            BodyError::Cpim(CpimError::MissingBlankLine {
                section: "MIME content"
            })
        );
        assert_eq!(
            err(b"From: <im:a@b>\r\n\r\nContent-Type: text/plain\r\n"),
            BodyError::Cpim(CpimError::MissingBlankLine {
                section: "MIME content"
            })
        );
        assert_eq!(
            err(b""),
            BodyError::Cpim(CpimError::MissingBlankLine { section: "message" })
        );
        assert_eq!(
            err(b"From: <im:a@b>\nTo: <im:c@d>\n\nContent-Type: text/plain\n\nhi"),
            BodyError::Cpim(CpimError::BareLf { offset: 14 })
        );
        assert_eq!(
            err(b"From: <im:a@b>\r\n folded\r\n\r\nContent-Type: a/b\r\n\r\n"),
            BodyError::Cpim(CpimError::BadHeader {
                offset: 16,
                reason: "folded line (not allowed in message/cpim message headers)"
            })
        );
        assert!(matches!(
            err(b"Fr om: x\r\n\r\nContent-Type: a/b\r\n\r\n"),
            BodyError::Cpim(CpimError::BadHeader {
                reason: "invalid header name",
                ..
            })
        ));
        assert!(matches!(
            err(b": x\r\n\r\nContent-Type: a/b\r\n\r\n"),
            BodyError::Cpim(CpimError::BadHeader { .. })
        ));
        assert!(matches!(
            err(b"From: \xff\r\n\r\nContent-Type: a/b\r\n\r\n"),
            BodyError::Cpim(CpimError::BadHeader {
                reason: "not UTF-8",
                ..
            })
        ));
        let msg = err(b"From: <im:a@b>\nTo: <im:c@d>\n\n").to_string();
        assert!(msg.contains("LF") && msg.contains("CRLF"), "{msg}");
    }

    #[test]
    fn truncations_never_panic() {
        let (bytes, _) = wrapped_pidf();
        for end in 0..=bytes.len() {
            let _ = CpimMessage::parse(&bytes.slice(..end));
            let _ = CpimMessage::parse(&bytes.slice(end..));
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = CpimMessage::parse(&Bytes::from(bytes));
        }
    }
}
