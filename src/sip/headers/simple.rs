//! Single-token and numeric headers: Call-ID, CSeq, Max-Forwards,
//! Content-Length, delta-seconds (Expires, Min-Expires), entity tags
//! (RFC 3903 §11.3) and token lists (Require, Supported, Allow, ...).

use super::decode::{decode_with, opt_comma_list};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, bs_slice, sws, token};
use crate::sip::method::Method;
use bytestring::ByteString;
use nom::bytes::complete::take_while1;
use std::fmt;

/// `Call-ID: word [ "@" word ]`.
pub fn decode_call_id(src: &ByteString) -> Result<ByteString, ValueError> {
    let b = src.as_bytes();
    let word_end = |s: &[u8]| {
        s.iter()
            .position(|&c| !g::is_word_char(c))
            .unwrap_or(s.len())
    };
    let n = word_end(b);
    if n == 0 {
        return Err(ValueError {
            at: 0,
            reason: "empty Call-ID",
        });
    }
    let mut end = n;
    if b.get(n) == Some(&b'@') {
        let m = word_end(&b[n + 1..]);
        if m == 0 {
            return Err(ValueError {
                at: n + 1,
                reason: "empty host part in Call-ID",
            });
        }
        end = n + 1 + m;
    }
    if end != b.len() {
        return Err(ValueError {
            at: end,
            reason: "invalid character in Call-ID",
        });
    }
    Ok(src.clone())
}

/// `CSeq: 1*DIGIT LWS Method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

pub fn decode_cseq(src: &ByteString) -> Result<CSeq, ValueError> {
    decode_with(src, |i| {
        let (i, seq) = g::decimal(u64::from(u32::MAX), "expected a sequence number")(i)?;
        let (i, _) = g::expect(
            "expected whitespace after the sequence number",
            take_while1(g::is_wsp),
        )(i)?;
        let (i, m) = g::expect("expected a method", token)(i)?;
        Ok((
            i,
            CSeq {
                seq: seq as u32,
                method: Method::from_token(&bs_slice(src, m)),
            },
        ))
    })
}

/// Max-Forwards: `1*DIGIT`, 0 to 255 (RFC 3261 §20.22).
pub fn decode_max_forwards(src: &ByteString) -> Result<u8, ValueError> {
    decode_with(src, g::decimal(255, "expected a number")).map(|v| v as u8)
}

/// Content-Length: `1*DIGIT`.
pub fn decode_content_length(src: &ByteString) -> Result<u32, ValueError> {
    decode_with(
        src,
        g::decimal(u64::from(u32::MAX), "expected a non-negative number"),
    )
    .map(|v| v as u32)
}

/// `delta-seconds` (Expires, Min-Expires): a 32-bit unsigned number.
pub fn decode_delta_seconds(src: &ByteString) -> Result<u32, ValueError> {
    decode_with(
        src,
        g::decimal(u64::from(u32::MAX), "expected delta-seconds"),
    )
    .map(|v| v as u32)
}

/// SIP-ETag / SIP-If-Match: `entity-tag = token` (RFC 3903 §11.3).
pub fn decode_entity_tag(src: &ByteString) -> Result<ByteString, ValueError> {
    decode_with(src, |i| {
        let (i, _) = sws(i)?;
        let (r, t) = g::expect("expected an entity-tag", token)(i)?;
        Ok((r, bs_slice(src, t)))
    })
}

/// Lists of tokens: Require, Supported, Unsupported, Proxy-Require,
/// Allow-Events (event types), Allow (methods). The empty value is allowed.
pub fn decode_token_list(src: &ByteString) -> Result<Vec<ByteString>, ValueError> {
    decode_with(
        src,
        opt_comma_list(|i| {
            let (r, t) = token(i)?;
            Ok((r, bs_slice(src, t)))
        }),
    )
}

pub fn decode_allow(src: &ByteString) -> Result<Vec<Method>, ValueError> {
    decode_token_list(src).map(|v| v.iter().map(Method::from_token).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(
            decode_cseq(&bs("0009 INVITE")).unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert!(decode_cseq(&bs("36893488147419103232 REGISTER")).is_err());
        assert!(decode_cseq(&bs("1SUBSCRIBE")).is_err());
        assert_eq!(decode_max_forwards(&bs("0068")).unwrap(), 68);
        assert!(decode_max_forwards(&bs("300")).is_err());
        assert!(decode_content_length(&bs("-999")).is_err());
        assert_eq!(decode_delta_seconds(&bs("600")).unwrap(), 600);
    }

    #[test]
    fn call_id_words() {
        assert!(decode_call_id(&bs("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")).is_ok());
        assert!(decode_call_id(&bs("a b")).is_err());
        assert!(decode_call_id(&bs("a@")).is_err());
    }
}
