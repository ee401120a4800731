//! name-addr / addr-spec (RFC 3261 §20, §25.1): From, To, Contact, Route,
//! Record-Route, Reply-To.

use super::decode::{clamp_u32, comma_list, decode_with};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, In, PResult, bs_slice, fail, quoted_string, sws};
use crate::sip::params::{Param, Params, header_params};
use crate::sip::uri::{Uri, UriContext, uri};
use bytestring::ByteString;
use std::fmt;

/// `[ display-name ] <URI> *( ;param )` or `URI *( ;param )`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as received: quoted-string content (escapes kept) when
    /// `display_quoted`, else the token sequence.
    pub display_name: Option<ByteString>,
    pub display_quoted: bool,
    pub uri: Uri,
    /// Printed with `<>` (always when it has a display name or the URI has
    /// `;`, `,` or `?`, RFC 3261 §20).
    pub angle: bool,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            display_quoted: false,
            uri,
            angle: true,
            params: Params::default(),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.params
            .set(Param::new("tag", Some(ByteString::from(tag.to_owned()))));
    }

    /// The display name without quotes and escapes.
    pub fn display(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.display_name.as_deref().map(|d| {
            if self.display_quoted {
                g::unescape_quoted(d)
            } else {
                d.into()
            }
        })
    }

    /// Contact `expires` parameter (RFC 3261 §20.10).
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .map(clamp_u32)
    }

    /// Contact `q` parameter in thousandths (RFC 3261 §20.10: 0 to 1).
    pub fn q(&self) -> Option<u16> {
        let v = self.params.get("q").flatten()?;
        let f: f64 = v.parse().ok()?;
        (0.0..=1.0)
            .contains(&f)
            .then(|| (f * 1000.0).round() as u16)
    }

    /// A feature parameter (RFC 3840), e.g. `methods="SUBSCRIBE"` or the
    /// seed's `description="open"`, unquoted.
    pub fn feature(&self, name: &str) -> Option<String> {
        self.params
            .find(name)
            .and_then(|p| p.unquoted_value())
            .map(|v| v.into_owned())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs_angle = self.angle
            || self.display_name.is_some()
            || !self.uri.params.is_empty()
            || self.uri.headers.is_some();
        if let Some(d) = &self.display_name {
            if self.display_quoted {
                write!(f, "\"{d}\" ")?;
            } else {
                write!(f, "{d} ")?;
            }
        }
        if needs_angle {
            write!(f, "<{}>", self.uri)?;
        } else {
            write!(f, "{}", self.uri)?;
        }
        write!(f, "{}", self.params)
    }
}

/// `name-addr` or `addr-spec`, with header parameters. With `require_angle`
/// (Route, Record-Route) only `name-addr` is allowed.
fn name_addr<'a>(
    src: &ByteString,
    require_angle: bool,
) -> impl Fn(In<'a>) -> PResult<'a, NameAddr> + '_ {
    move |i| {
        let (i, _) = sws(i)?;
        let (i, display_name, display_quoted) = if i.first() == Some(&b'"') {
            let (r, q) = quoted_string(i)?;
            let (r, _) = sws(r)?;
            (r, Some(bs_slice(src, q)), true)
        } else {
            // *(token LWS) followed by '<' is a display name; RFC 4475
            // §3.1.1.6: no LWS before '<' is accepted too.
            let mut k = 0;
            let mut last_token_end = 0;
            while k < i.len() {
                let b = i[k];
                if g::is_token_char(b) {
                    k += 1;
                    last_token_end = k;
                } else if g::is_wsp(b) {
                    k += 1;
                } else {
                    break;
                }
            }
            if i.get(k) == Some(&b'<') && last_token_end > 0 {
                (&i[k..], Some(bs_slice(src, &i[..last_token_end])), false)
            } else {
                (i, None, false)
            }
        };
        if i.first() == Some(&b'<') {
            let inner = &i[1..];
            if inner.first().is_some_and(|&b| g::is_wsp(b)) {
                return fail(inner, "whitespace inside '<' '>'");
            }
            let (r, u) = uri(src, UriContext::NameAddr)(inner)?;
            match r.first() {
                Some(&b'>') => {}
                Some(&b) if g::is_wsp(b) => return fail(r, "whitespace inside '<' '>'"),
                _ => return fail(r, "expected '>'"),
            }
            let (r, params) = header_params(src)(&r[1..])?;
            return Ok((
                r,
                NameAddr {
                    display_name,
                    display_quoted,
                    uri: u,
                    angle: true,
                    params,
                },
            ));
        }
        if display_name.is_some() {
            return fail(i, "expected '<' after display name");
        }
        if require_angle {
            return fail(i, "expected '<'");
        }
        match uri(src, UriContext::AddrSpec)(i) {
            Ok((r, u)) => {
                let (r, params) = header_params(src)(r)?;
                Ok((
                    r,
                    NameAddr {
                        display_name: None,
                        display_quoted: false,
                        uri: u,
                        angle: false,
                        params,
                    },
                ))
            }
            Err(e) => {
                // A '<' later on means the text before it was meant as a
                // display name (RFC 4475 §3.1.2.15).
                if memchr::memchr(b'<', i).is_some() && memchr::memchr(b'"', i).is_none() {
                    fail(i, "display name with non-token characters must be quoted")
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// From, To, Reply-To: exactly one name-addr/addr-spec.
pub fn decode_name_addr(src: &ByteString) -> Result<NameAddr, ValueError> {
    decode_with(src, name_addr(src, false))
}

/// Route / Record-Route / Path: a list of name-addrs (angle brackets required).
pub fn decode_route(src: &ByteString) -> Result<Vec<NameAddr>, ValueError> {
    decode_with(src, comma_list(name_addr(src, true)))
}

/// One Contact header value: `*` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (RFC 3261 §10.2.2: remove all bindings).
    Star,
    List(Vec<NameAddr>),
}

pub fn decode_contact(src: &ByteString) -> Result<Contacts, ValueError> {
    if src.trim() == "*" {
        return Ok(Contacts::Star);
    }
    decode_with(src, comma_list(name_addr(src, false))).map(Contacts::List)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn name_addr_forms() {
        let f = decode_name_addr(&bs(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com> ;   tag = 98asjd8",
        ))
        .unwrap();
        assert_eq!(f.display().unwrap(), "J Rosenberg \\\"");
        assert_eq!(f.tag(), Some("98asjd8"));
        let t = decode_name_addr(&bs("sip:j.user@example.com;tag=3xfe")).unwrap();
        assert!(!t.angle);
        assert_eq!(t.tag(), Some("3xfe"));
        assert!(
            t.uri.params.is_empty(),
            "tag is a header parameter in addr-spec form"
        );
        let l = decode_name_addr(&bs("caller<sip:caller@example.com>;tag=323")).unwrap();
        assert_eq!(l.display().unwrap(), "caller");
        assert_eq!(l.to_string(), "caller <sip:caller@example.com>;tag=323");
        let e =
            decode_name_addr(&bs("Bell, Alexander <sip:a.g.bell@example.com>;tag=43")).unwrap_err();
        assert_eq!(
            e.reason,
            "display name with non-token characters must be quoted"
        );
        let e =
            decode_name_addr(&bs("\"Watson, Thomas\" < sip:t.watson@example.org >")).unwrap_err();
        assert_eq!(e.reason, "whitespace inside '<' '>'");
        let e = decode_name_addr(&bs("\"Mr. J. User <sip:j.user@example.com>")).unwrap_err();
        assert_eq!(e.reason, "unterminated quoted string");
    }

    #[test]
    fn contact_features_and_star() {
        let c = decode_contact(&bs("<sip:id@pua.example.com>;methods=\"MESSAGE\"; description=\"Away from keyboard\"; expires=600, <sip:id@pua.example.com>;methods=\"SUBSCRIBE\";q=0.5")).unwrap();
        let Contacts::List(l) = c else { panic!() };
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].feature("description").as_deref(),
            Some("Away from keyboard")
        );
        assert_eq!(l[0].expires(), Some(600));
        assert_eq!(l[1].feature("methods").as_deref(), Some("SUBSCRIBE"));
        assert_eq!(l[1].q(), Some(500));
        assert_eq!(decode_contact(&bs(" * ")).unwrap(), Contacts::Star);
        assert!(
            decode_contact(&bs("sip:user@example.com?Route=%3Csip:sip.example.com%3E")).is_err()
        );
        assert!(
            decode_contact(&bs(
                "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
            ))
            .is_ok()
        );
    }
}
