//! A glance at a request before it is parsed: its method, whether its To
//! has a tag, its top Via, and the header lines a response copies (RFC 3261
//! §8.2.6.2: Via, From, To, Call-ID, CSeq), found by splitting lines, with
//! nothing decoded. It serves the stateless refusal under overload
//! (`transaction::screen`): there most requests are only refused, and the
//! full parse of each cost the core more than its answer did.
//!
//! Invariant: a glance exists only for a plain head, and anything else
//! gives `None`, so that the request is parsed in full, as before:
//! - a request line `Method SP Request-URI SP SIP/2.0`, the method a token;
//! - every line ending in CRLF, none folded (§7.3.1), no line empty before
//!   the end of the head;
//! - From, To, Call-ID and CSeq exactly once each, at least one Via, at
//!   most [`MAX_COPIED`] copied lines;
//! - one value in the first Via line (no comma), and a CSeq whose method is
//!   the request's.

use super::HeaderName;
use bytes::Bytes;

/// The most header lines a glanced request may have that its response
/// copies: more (a long Via chain) and it is parsed instead.
pub const MAX_COPIED: usize = 16;

/// What a stateless refusal needs from a request, borrowed from its bytes.
#[derive(Debug)]
pub struct Glance<'a> {
    bytes: &'a [u8],
    method: &'a str,
    top_via: &'a str,
    to_tagged: bool,
    /// Each copied line as (start, end of value) in `bytes`, in order.
    copied: [(usize, usize); MAX_COPIED],
    count: usize,
    /// Which of `copied` is the first Via line, and which the To line.
    top_via_line: usize,
    to_line: usize,
}

/// The header fields a response copies, by their long and compact names
/// (§7.3.3).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copied {
    Via,
    From,
    To,
    CallId,
    CSeq,
}

fn copied(name: &[u8]) -> Option<Copied> {
    let is = |long: &str, compact: &str| {
        name.eq_ignore_ascii_case(long.as_bytes()) || name.eq_ignore_ascii_case(compact.as_bytes())
    };
    if is("via", "v") {
        Some(Copied::Via)
    } else if is("from", "f") {
        Some(Copied::From)
    } else if is("to", "t") {
        Some(Copied::To)
    } else if is("call-id", "i") {
        Some(Copied::CallId)
    } else if name.eq_ignore_ascii_case(b"cseq") {
        Some(Copied::CSeq)
    } else {
        None
    }
}

/// RFC 3261 §25.1 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Whether a To value has a `tag` header parameter (§20.39): in name-addr
/// form the parameters follow the `>`, in addr-spec form every `;`
/// parameter is a header parameter (§20.10). Quoted strings (a display
/// name) are skipped. `None`: not plain enough to tell.
fn has_tag(value: &[u8]) -> Option<bool> {
    let mut i = 0;
    let mut params_from = None;
    while i < value.len() {
        match value[i] {
            b'"' => {
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= value.len() {
                    return None;
                }
            }
            b'<' => {
                let close = value[i..].iter().position(|&b| b == b'>')?;
                params_from = Some(i + close + 1);
                break;
            }
            b';' => {
                params_from = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(from) = params_from else {
        return Some(false);
    };
    let params = &value[from..];
    if params.contains(&b'"') {
        // A quoted parameter value could hide a `;`: parse instead.
        return None;
    }
    Some(params.split(|&b| b == b';').any(|p| {
        let name = p.split(|&b| b == b'=').next().unwrap_or_default();
        trim(name).eq_ignore_ascii_case(b"tag")
    }))
}

impl<'a> Glance<'a> {
    /// Glances at `bytes`, a datagram; `None` if it is not a plain request
    /// head (see the module's invariant).
    pub fn of(bytes: &'a [u8]) -> Option<Glance<'a>> {
        let mut lines = Lines { bytes, at: 0 };
        let (start, end) = lines.next()?;
        let request_line = &bytes[start..end];
        let mut parts = request_line.split(|&b| b == b' ');
        let method = parts
            .next()
            .filter(|m| !m.is_empty() && m.iter().all(|&b| is_token(b)))?;
        let uri = parts.next().filter(|u| !u.is_empty())?;
        if parts.next() != Some(b"SIP/2.0") || parts.next().is_some() || uri.contains(&b'\t') {
            return None;
        }
        let mut g = Glance {
            bytes,
            method: std::str::from_utf8(method).ok()?,
            top_via: "",
            to_tagged: false,
            copied: [(0, 0); MAX_COPIED],
            count: 0,
            top_via_line: usize::MAX,
            to_line: usize::MAX,
        };
        let (mut from, mut to, mut call_id, mut cseq) = (0, 0, 0, 0);
        loop {
            let (start, end) = lines.next()?;
            if start == end {
                break;
            }
            let line = &bytes[start..end];
            if line[0] == b' ' || line[0] == b'\t' {
                return None;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let Some(which) = copied(trim(&line[..colon])) else {
                continue;
            };
            let value = trim(&line[colon + 1..]);
            match which {
                Copied::Via if g.top_via_line == usize::MAX => {
                    if value.contains(&b',') {
                        return None;
                    }
                    g.top_via = std::str::from_utf8(value).ok()?;
                    g.top_via_line = g.count;
                }
                Copied::Via => {}
                Copied::From => from += 1,
                Copied::To => {
                    to += 1;
                    g.to_tagged = has_tag(value)?;
                    g.to_line = g.count;
                }
                Copied::CallId => call_id += 1,
                Copied::CSeq => {
                    cseq += 1;
                    let mut words = value
                        .split(|&b| b == b' ' || b == b'\t')
                        .filter(|w| !w.is_empty());
                    let seq = words.next()?;
                    if !seq.iter().all(u8::is_ascii_digit) || words.next() != Some(method) {
                        return None;
                    }
                }
            }
            if g.count == MAX_COPIED {
                return None;
            }
            g.copied[g.count] = (start, end);
            g.count += 1;
        }
        (g.top_via_line != usize::MAX && (from, to, call_id, cseq) == (1, 1, 1, 1)).then_some(g)
    }

    /// The request's method token.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The top Via's value, as received.
    pub fn top_via(&self) -> &'a str {
        self.top_via
    }

    /// Whether the To has a tag: the request is inside a dialog.
    pub fn to_tagged(&self) -> bool {
        self.to_tagged
    }

    /// A stateless response to the request, as `Message::stateless_reply`
    /// builds from a parsed one: the copied lines in their order, the top
    /// Via's value replaced by `top_via` (stamped by the caller, §18.2.1),
    /// `;tag=to_tag` added to a To without one, then `extra`, and no body.
    /// Lines are copied as received (a compact name stays compact).
    pub fn reply(
        &self,
        code: u16,
        reason: &str,
        top_via: &str,
        to_tag: &str,
        extra: &[(HeaderName, &str)],
    ) -> Bytes {
        use std::io::Write;
        let mut out = Vec::with_capacity(self.bytes.len().min(1024) + 128);
        let _ = write!(out, "SIP/2.0 {code:03} {reason}\r\n");
        for (i, &(start, end)) in self.copied[..self.count].iter().enumerate() {
            if i == self.top_via_line {
                out.extend_from_slice(b"Via: ");
                out.extend_from_slice(top_via.as_bytes());
            } else {
                out.extend_from_slice(&self.bytes[start..end]);
                if i == self.to_line && !self.to_tagged && code > 100 {
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(to_tag.as_bytes());
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in extra {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Bytes::from(out)
    }
}

/// The lines of a head, as (start, end) without their CRLF; `None` for a
/// line without CRLF (a bare LF, or the end of the datagram).
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Lines<'_> {
    fn next(&mut self) -> Option<(usize, usize)> {
        let rest = self.bytes.get(self.at..)?;
        let lf = rest.iter().position(|&b| b == b'\n')?;
        if lf == 0 || rest[lf - 1] != b'\r' {
            return None;
        }
        let start = self.at;
        self.at += lf + 1;
        Some((start, start + lf - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::framing::{Limits, parse_datagram};
    use crate::sip::message::tests::SUBSCRIBE;

    fn subscribe() -> String {
        SUBSCRIBE.replace('\n', "\r\n")
    }

    fn fields(wire: Bytes) -> Vec<(HeaderName, String)> {
        let resp = parse_datagram(wire, &Limits::default()).unwrap();
        resp.headers()
            .iter()
            .map(|f| (f.name.clone(), f.value.to_string()))
            .collect()
    }

    /// The glance's response is the one the full parse gives: the same
    /// fields, values and order, the To tag added once, the extra field.
    #[test]
    fn reply_matches_the_parsed_stateless_reply() {
        let compact = subscribe()
            .replace("\r\nVia:", "\r\nv:")
            .replace("\r\nFrom:", "\r\nf:")
            .replace("\r\nTo:", "\r\nt:")
            .replace("\r\nCall-ID:", "\r\ni:");
        let quoted = subscribe().replace("To: <sip:", "To: \"Bob; tag=no <x>\" <sip:");
        let two_vias = subscribe().replacen(
            "\r\nVia:",
            "\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-x\r\nVia:",
            1,
        );
        for raw in [subscribe(), compact, quoted, two_vias] {
            let g = Glance::of(raw.as_bytes()).unwrap_or_else(|| panic!("{raw}"));
            assert!(!g.to_tagged());
            assert_eq!(g.method(), "SUBSCRIBE");
            let req = parse_datagram(Bytes::from(raw.clone()), &Limits::default()).unwrap();
            let top = req.top_via().unwrap().to_string();
            assert_eq!(
                crate::sip::headers::decode_via(&g.top_via().to_owned().into()).unwrap()[0],
                req.top_via().unwrap().clone()
            );
            let extra = [(HeaderName::RetryAfter, "2")];
            let ours = g.reply(503, "Service Unavailable", &top, "t1", &extra);
            let theirs = req.stateless_reply(503, "Service Unavailable", "t1", &extra);
            assert_eq!(fields(ours), fields(theirs), "{raw}");
        }
    }

    #[test]
    fn a_tag_is_found_only_among_the_header_parameters() {
        let cases = [
            ("<sip:b@example.com>", Some(false)),
            ("<sip:b@example.com>;tag=x", Some(true)),
            ("<sip:b@example.com> ; TAG = x", Some(true)),
            ("<sip:b@example.com;tag=uri-param>", Some(false)),
            ("sip:b@example.com;tag=x", Some(true)),
            ("\"a;tag=x <y>\" <sip:b@example.com>", Some(false)),
            ("\"a\" <sip:b@example.com>;tagx=1", Some(false)),
            ("<sip:b@example.com>;p=\";tag=x\"", None),
            ("\"unterminated <sip:b@example.com>", None),
        ];
        for (value, expected) in cases {
            assert_eq!(has_tag(value.as_bytes()), expected, "{value}");
        }
    }

    /// What is not plain is left to the parser.
    #[test]
    fn anything_not_plain_is_not_glanced() {
        let cases = [
            subscribe().replace("\r\nTo:", "\r\nTo: <sip:x@y>\r\nTo:"),
            subscribe().replace("\r\nCall-ID: ", "\r\nCall-ID:\r\n "),
            subscribe().replace("SIP/2.0\r\n", "SIP/3.0\r\n"),
            SUBSCRIBE.to_owned(),
            subscribe().replacen(
                "\r\nVia: ",
                "\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-x, ",
                1,
            ),
            subscribe().replace("CSeq: 1 SUBSCRIBE", "CSeq: 1 NOTIFY"),
            subscribe().replace("\r\nCall-ID:", "\r\nX-Call-ID:"),
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n".to_owned(),
            subscribe()[..subscribe().find("\r\n\r\n").unwrap()].to_owned(),
        ];
        for raw in cases {
            assert!(Glance::of(raw.as_bytes()).is_none(), "{raw}");
        }
        let tagged = subscribe().replace(
            "To: <sip:alice@example.com>",
            "To: <sip:alice@example.com>;tag=a1",
        );
        assert!(Glance::of(tagged.as_bytes()).unwrap().to_tagged());
    }
}
