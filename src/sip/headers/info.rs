//! Date, Warning and Retry-After (RFC 3261 §20.17, §20.43, §20.33).

use super::decode::{comma_list, decode_with};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, bs_slice, fail, quoted_string, sws};
use crate::sip::params::{Params, header_params};
use bytestring::ByteString;
use nom::bytes::complete::take_while1;
use std::fmt;

/// `Date: SIP-date` — RFC 1123 date in GMT (RFC 3261 §20.17).
pub fn decode_date(src: &ByteString) -> Result<std::time::SystemTime, ValueError> {
    let s = src.trim();
    if !s.ends_with(" GMT") {
        return Err(ValueError {
            at: s.len().saturating_sub(3),
            reason: "SIP-date must be in GMT",
        });
    }
    httpdate::parse_http_date(s).map_err(|_| ValueError {
        at: 0,
        reason: "invalid SIP-date",
    })
}

/// One Warning value (RFC 3261 §20.43).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub code: u16,
    pub agent: ByteString,
    /// The quoted text, escapes kept.
    pub text: ByteString,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {} \"{}\"", self.code, self.agent, self.text)
    }
}

pub fn decode_warning(src: &ByteString) -> Result<Vec<Warning>, ValueError> {
    decode_with(
        src,
        comma_list(|i| {
            let (r, code) = g::expect(
                "expected a 3-digit warn-code",
                take_while1(|b: u8| b.is_ascii_digit()),
            )(i)?;
            if code.len() != 3 {
                return fail(i, "warn-code must have 3 digits");
            }
            let (r, _) = g::expect("expected SP", take_while1(g::is_wsp))(r)?;
            let (r, agent) = g::expect(
                "expected a warn-agent",
                take_while1(|b| g::is_token_char(b) || b == b':' || b == b'[' || b == b']'),
            )(r)?;
            let (r, _) = g::expect("expected SP", take_while1(g::is_wsp))(r)?;
            let (r, text) = quoted_string(r)?;
            let code = std::str::from_utf8(code)
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Ok((
                r,
                Warning {
                    code,
                    agent: bs_slice(src, agent),
                    text: bs_slice(src, text),
                },
            ))
        }),
    )
}

/// `Retry-After: delta-seconds [ comment ] *( SEMI retry-param )`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    pub seconds: u32,
    pub comment: Option<ByteString>,
    pub params: Params,
}

pub fn decode_retry_after(src: &ByteString) -> Result<RetryAfter, ValueError> {
    decode_with(src, |i| {
        let (i, _) = sws(i)?;
        let (i, secs) = g::decimal(u64::from(u32::MAX), "expected delta-seconds")(i)?;
        let (i, _) = sws(i)?;
        let (i, comment) = if i.first() == Some(&b'(') {
            let (r, c) = g::comment(i)?;
            (r, Some(bs_slice(src, c)))
        } else {
            (i, None)
        };
        let (i, params) = header_params(src)(i)?;
        Ok((
            i,
            RetryAfter {
                seconds: secs as u32,
                comment,
                params,
            },
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn date_warning_retry() {
        assert!(decode_date(&bs("Sat, 13 Nov 2010 23:29:00 GMT")).is_ok());
        assert!(decode_date(&bs("Fri, 01 Jan 2010 16:00:00 EST")).is_err());
        let w = decode_warning(&bs("399 gw.example.com \"Unsupported \\\"x\\\"\"")).unwrap();
        assert_eq!(w[0].code, 399);
        assert!(decode_warning(&bs("1812 overture \"In Progress\"")).is_err());
        let r = decode_retry_after(&bs("18000 (in a meeting);duration=3600")).unwrap();
        assert_eq!(r.seconds, 18000);
        assert_eq!(r.comment.as_deref(), Some("in a meeting"));
        assert_eq!(r.params.get("duration"), Some(Some("3600")));
        assert!(decode_retry_after(&bs("949302838503028349304023988")).is_err());
    }
}
