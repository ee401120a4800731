//! Media types (RFC 3261 §20.15, §20.1): Content-Type and Accept, parsed
//! by the `mime` crate after normalisation.

use super::decode::{decode_with, opt_comma_list};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, In, PResult, fail, peek_sep, quoted_string, sep, sws, token};
use bytestring::ByteString;
use nom::bytes::complete::take_while1;

/// `type SLASH subtype *( SEMI m-parameter )`, normalised and parsed by the
/// `mime` crate.
fn media_type<'a>(i: In<'a>) -> PResult<'a, mime::Mime> {
    let (i, _) = sws(i)?;
    let (i, ty) = g::expect(
        "expected a media type",
        take_while1(|b| g::is_token_char(b) || b == b'*'),
    )(i)?;
    let (i, _) = sep(b'/')(i)?;
    let (i, sub) = g::expect(
        "expected a media subtype",
        take_while1(|b| g::is_token_char(b) || b == b'*'),
    )(i)?;
    let mut norm = String::with_capacity(ty.len() + sub.len() + 16);
    norm.push_str(std::str::from_utf8(ty).unwrap_or(""));
    norm.push('/');
    norm.push_str(std::str::from_utf8(sub).unwrap_or(""));
    let mut i = i;
    while peek_sep(i, b';') {
        let (r, _) = sep(b';')(i)?;
        let (r, name) = g::expect("empty media type parameter", token)(r)?;
        let (r, _) = sep(b'=')(r)?;
        let (r, value) = if r.first() == Some(&b'"') {
            let (r2, q) = quoted_string(r)?;
            (r2, &r[..q.len() + 2])
        } else {
            g::expect("expected a parameter value", token)(r)?
        };
        norm.push(';');
        norm.push_str(std::str::from_utf8(name).unwrap_or(""));
        norm.push('=');
        norm.push_str(std::str::from_utf8(value).unwrap_or(""));
        i = r;
    }
    match norm.parse::<mime::Mime>() {
        Ok(m) => Ok((i, m)),
        Err(_) => fail(i, "invalid media type"),
    }
}

pub fn decode_content_type(src: &ByteString) -> Result<mime::Mime, ValueError> {
    decode_with(src, media_type)
}

/// `Accept: [ accept-range *( COMMA accept-range ) ]`; empty = nothing.
pub fn decode_accept(src: &ByteString) -> Result<Vec<mime::Mime>, ValueError> {
    decode_with(src, opt_comma_list(media_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn media_types() {
        let c = decode_content_type(&bs("application / pidf+xml ; charset=\"utf-8\"")).unwrap();
        assert_eq!(c.essence_str(), "application/pidf+xml");
        let a = decode_accept(&bs("application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag")).unwrap();
        assert_eq!(a.len(), 6);
        assert!(decode_accept(&bs("")).unwrap().is_empty());
    }
}
