//! Typed parse errors. Every error says where (byte offset from the start of
//! the message) and why; header errors also say which header.

use super::name::HeaderName;

/// Why a SIP message could not be parsed or framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message is larger than `Limits::max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },

    /// More header fields than `Limits::max_headers`.
    #[error("more than {limit} header fields (at offset {offset})")]
    TooManyHeaders { limit: usize, offset: usize },

    /// A header line (after unfolding) is longer than `Limits::max_line_bytes`.
    #[error("header line at offset {offset} is longer than {limit} bytes")]
    LineTooLong { offset: usize, limit: usize },

    /// The body is larger than `Limits::max_body_bytes`.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },

    /// Nothing but whitespace was received.
    #[error("empty message")]
    Empty,

    /// The header section is not valid UTF-8 (RFC 3261 §25.1: TEXT-UTF8).
    #[error("header section is not valid UTF-8 at offset {offset}")]
    NotUtf8 { offset: usize },

    /// The start line is neither a Request-Line nor a Status-Line.
    #[error("malformed start line at offset {offset}: {reason}")]
    StartLine { offset: usize, reason: &'static str },

    /// The SIP-Version is not `SIP/2.0` (answered with 505).
    #[error("unsupported SIP version {version:?}")]
    UnsupportedVersion { version: String },

    /// A line in the header section is not `name: value`.
    #[error("malformed header line at offset {offset}: {reason}")]
    HeaderLine { offset: usize, reason: &'static str },

    /// A header value does not match its grammar.
    #[error("malformed {header} header at offset {offset}: {reason}")]
    Header {
        header: HeaderName,
        offset: usize,
        reason: &'static str,
    },

    /// The Content-Length header occurs more than once with different values
    /// (RFC 4475 §3.3.9: the message cannot be framed).
    #[error("conflicting Content-Length values at offset {offset}")]
    ConflictingContentLength { offset: usize },

    /// A stream message without Content-Length (RFC 3261 §18.3: MUST).
    #[error("Content-Length is required on a stream transport")]
    MissingContentLength,

    /// Content-Length announces more octets than the datagram holds.
    #[error("Content-Length is {declared} but only {available} body bytes were received")]
    BodyTruncated { declared: usize, available: usize },

    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    #[error("CSeq method {cseq} does not match the request method {method}")]
    CSeqMethodMismatch { method: String, cseq: String },
}

impl ParseError {
    /// The SIP status a UAS answers this error with (RFC 3261 §21.4,
    /// §8.2.2). The one place parse errors are mapped to statuses.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::MessageTooLarge { .. } | ParseError::BodyTooLarge { .. } => 513,
            ParseError::UnsupportedVersion { .. } => 505,
            _ => 400,
        }
    }

    /// The header the error is about, if any.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            ParseError::Header { header, .. } => Some(header),
            ParseError::ConflictingContentLength { .. }
            | ParseError::MissingContentLength
            | ParseError::BodyTruncated { .. } => Some(&HeaderName::ContentLength),
            ParseError::CSeqMethodMismatch { .. } => Some(&HeaderName::CSeq),
            _ => None,
        }
    }

    /// The byte offset from the start of the message, if known.
    pub fn offset(&self) -> Option<usize> {
        match self {
            ParseError::TooManyHeaders { offset, .. }
            | ParseError::LineTooLong { offset, .. }
            | ParseError::NotUtf8 { offset }
            | ParseError::StartLine { offset, .. }
            | ParseError::HeaderLine { offset, .. }
            | ParseError::Header { offset, .. }
            | ParseError::ConflictingContentLength { offset } => Some(*offset),
            _ => None,
        }
    }

    /// A short reason phrase for a response (no offsets, one line).
    pub fn reason_phrase(&self) -> String {
        match self {
            ParseError::Header { header, reason, .. } => format!("Bad {header}: {reason}"),
            ParseError::StartLine { reason, .. } => format!("Bad Request-Line: {reason}"),
            ParseError::HeaderLine { reason, .. } => format!("Bad header line: {reason}"),
            ParseError::UnsupportedVersion { .. } => "Version Not Supported".to_owned(),
            ParseError::MessageTooLarge { .. } | ParseError::BodyTooLarge { .. } => {
                "Message Too Large".to_owned()
            }
            other => {
                let mut s = other.to_string();
                if let Some(first) = s.get(..1) {
                    let up = first.to_ascii_uppercase();
                    s.replace_range(..1, &up);
                }
                s
            }
        }
    }
}

/// A grammar failure inside one header value, before it is placed in the
/// message: `at` is the offset inside the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueError {
    pub at: usize,
    pub reason: &'static str,
}

impl ValueError {
    /// Places the error in a message: which header, at which value offset.
    pub fn in_header(self, header: &HeaderName, value_offset: usize) -> ParseError {
        ParseError::Header {
            header: header.clone(),
            offset: value_offset + self.at,
            reason: self.reason,
        }
    }
}
