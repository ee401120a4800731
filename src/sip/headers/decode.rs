//! What the header decoders share: running a parser over a whole value, the
//! comma-separated list forms of RFC 3261 §7.3.1, and number clamping.

use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, In, PResult, peek_sep, sep, sws};
use bytestring::ByteString;

/// Runs `p` over the whole value: trailing whitespace is allowed, anything
/// else left over is an error.
pub(super) fn decode_with<'a, O>(
    src: &'a ByteString,
    mut p: impl FnMut(In<'a>) -> PResult<'a, O>,
) -> Result<O, ValueError> {
    let input = src.as_bytes();
    match p(input) {
        Ok((rest, v)) => {
            let rest = sws(rest).map(|(r, _)| r).unwrap_or(rest);
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(ValueError {
                    at: input.len() - rest.len(),
                    reason: "unexpected characters",
                })
            }
        }
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(ValueError {
            at: g::offset_in(input, e.at),
            reason: e.reason,
        }),
        Err(nom::Err::Incomplete(_)) => Err(ValueError {
            at: input.len(),
            reason: "incomplete value",
        }),
    }
}

/// `item *( COMMA item )`.
pub(super) fn comma_list<'a, O>(
    mut item: impl FnMut(In<'a>) -> PResult<'a, O>,
) -> impl FnMut(In<'a>) -> PResult<'a, Vec<O>> {
    move |i| {
        let (mut i, _) = sws(i)?;
        let mut out = Vec::with_capacity(1);
        loop {
            let (r, v) = item(i)?;
            out.push(v);
            if peek_sep(r, b',') {
                let (r, _) = sep(b',')(r)?;
                i = r;
            } else {
                return Ok((r, out));
            }
        }
    }
}

/// `[ item *( COMMA item ) ]`: the empty value is an empty list.
pub(super) fn opt_comma_list<'a, O>(
    item: impl FnMut(In<'a>) -> PResult<'a, O>,
) -> impl FnMut(In<'a>) -> PResult<'a, Vec<O>> {
    let mut list = comma_list(item);
    move |i| {
        let (r, _) = sws(i)?;
        if r.is_empty() {
            Ok((r, Vec::new()))
        } else {
            list(r)
        }
    }
}

/// A `u64` parameter value as `u32`, saturating.
pub(super) fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A header value for the tests of the header modules.
#[cfg(test)]
pub(super) fn bs(s: &'static str) -> ByteString {
    ByteString::from_static(s)
}
