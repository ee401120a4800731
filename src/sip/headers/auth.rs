//! Authentication (RFC 3261 §25.1 credentials / challenge, RFC 7616/8760):
//! Authorization, WWW-Authenticate and their proxy forms.

use super::decode::decode_with;
use crate::sip::error::ValueError;
use crate::sip::grammar::{
    self as g, In, PResult, bs_slice, peek_sep, quoted_string, sep, sws, token,
};
use crate::sip::params::{Param, Params};
use bytestring::ByteString;
use nom::bytes::complete::take_while1;
use std::fmt;

/// `auth-scheme LWS auth-param *( COMMA auth-param )` — used for both
/// credentials (Authorization) and challenges (WWW-Authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthValue {
    pub scheme: ByteString,
    pub params: Params,
}

impl AuthValue {
    /// A parameter, unquoted.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .find(name)
            .and_then(|p| p.unquoted_value())
            .map(|v| v.into_owned())
    }

    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("Digest")
    }
}

impl fmt::Display for AuthValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        for (n, p) in self.params.iter().enumerate() {
            f.write_str(if n == 0 { " " } else { ", " })?;
            f.write_str(&p.name)?;
            if let Some(v) = &p.value {
                if p.quoted {
                    write!(f, "=\"{v}\"")?;
                } else {
                    write!(f, "={v}")?;
                }
            }
        }
        Ok(())
    }
}

fn auth_param<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Param> + '_ {
    move |i| {
        let (i, name) = g::expect("expected an auth parameter", token)(i)?;
        let (i, _) = sep(b'=')(i)?;
        if i.first() == Some(&b'"') {
            let (r, q) = quoted_string(i)?;
            Ok((
                r,
                Param {
                    name: bs_slice(src, name),
                    value: Some(bs_slice(src, q)),
                    quoted: true,
                },
            ))
        } else {
            let (r, v) = g::expect("expected an auth parameter value", token)(i)?;
            Ok((
                r,
                Param {
                    name: bs_slice(src, name),
                    value: Some(bs_slice(src, v)),
                    quoted: false,
                },
            ))
        }
    }
}

/// One or more challenges/credentials in one header value.
pub fn decode_auth(src: &ByteString) -> Result<Vec<AuthValue>, ValueError> {
    decode_with(src, |i| {
        let (mut i, _) = sws(i)?;
        let mut out = Vec::with_capacity(1);
        loop {
            let (r, scheme) = g::expect("expected an auth scheme", token)(i)?;
            let (r, _) = g::expect(
                "expected whitespace after the auth scheme",
                take_while1(g::is_wsp),
            )(r)?;
            let mut params = Params::default();
            let (mut r, first) = auth_param(src)(r)?;
            params.push(first);
            loop {
                if !peek_sep(r, b',') {
                    break;
                }
                let (after, _) = sep(b',')(r)?;
                // `, token LWS token` starts a new challenge; `, token =` a parameter.
                let (tail, t) = match token(after) {
                    Ok(x) => x,
                    Err(e) => return Err(e),
                };
                let _ = t;
                if peek_sep(tail, b'=') {
                    let (r2, p) = auth_param(src)(after)?;
                    params.push(p);
                    r = r2;
                } else {
                    out.push(AuthValue {
                        scheme: bs_slice(src, scheme),
                        params,
                    });
                    i = after;
                    params = Params::default();
                    break;
                }
            }
            if !params.is_empty() {
                out.push(AuthValue {
                    scheme: bs_slice(src, scheme),
                    params,
                });
                return Ok((r, out));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn auth_values() {
        let a = decode_auth(&bs("Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b\", uri=\"sip:bob@biloxi.com\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae4\", algorithm=MD5")).unwrap();
        assert_eq!(a.len(), 1);
        assert!(a[0].is_digest());
        assert_eq!(a[0].param("username").as_deref(), Some("bob"));
        assert_eq!(a[0].param("nc").as_deref(), Some("00000001"));
        let two = decode_auth(&bs("Digest realm=\"a\", nonce=\"n1\", algorithm=SHA-256, Digest realm=\"a\", nonce=\"n1\", algorithm=MD5")).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].param("algorithm").as_deref(), Some("MD5"));
        let other = decode_auth(&bs("NoOneKnowsThisScheme opaque-data=here")).unwrap();
        assert_eq!(other[0].scheme, "NoOneKnowsThisScheme");
    }
}
