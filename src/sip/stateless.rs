//! Stateless answers (RFC 3261 §8.2.7): a response's wire form written
//! straight from the request's received fields, without building a
//! [`Message`] and decoding its copies again.

use super::message::copied_to_response;
use super::{HeaderName, Message};
use bytes::Bytes;
use std::io::Write;

impl Message {
    /// The wire form of a response to this request that copies only what
    /// §8.2.6.2 requires (every Via, From, To with `to_tag` added when it
    /// has none, Call-ID, CSeq) plus `extra`, written straight from the
    /// received values, with no body. For answers that keep no state (a
    /// 503 under overload, §8.2.7), where building a [`Message`] and
    /// decoding its copies again would cost more than the answer is worth.
    pub fn stateless_reply(
        &self,
        code: u16,
        reason: &str,
        to_tag: &str,
        extra: &[(HeaderName, &str)],
    ) -> Bytes {
        let mut out = Vec::with_capacity(512);
        let _ = write!(out, "SIP/2.0 {code:03} {reason}\r\n");
        let to_has_tag = self.to().is_some_and(|t| t.tag().is_some());
        let fields = self
            .headers()
            .iter()
            .filter(|f| copied_to_response(&f.name));
        for f in fields {
            let tag = (f.name == HeaderName::To && !to_has_tag && code > 100)
                // Appended to either form: after a name-addr's `>` or an
                // addr-spec, `;tag=` is a header parameter (§20.39).
                .then_some(to_tag);
            field(&mut out, &f.name, &f.value, tag);
        }
        for (name, value) in extra {
            field(&mut out, name, value, None);
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Bytes::from(out)
    }
}

/// `Name: value[;tag=…]` and its CRLF.
fn field(out: &mut Vec<u8>, name: &HeaderName, value: &str, tag: Option<&str>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    if let Some(tag) = tag {
        out.extend_from_slice(b";tag=");
        out.extend_from_slice(tag.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use crate::sip::framing::{Limits, parse_datagram};
    use crate::sip::message::tests::{SUBSCRIBE, parse};
    use crate::sip::{HeaderName, Message};

    /// The stateless wire form is the response `response_to` builds (the
    /// same copied fields, in order, the To tag added once), plus the extra
    /// fields, with no body; a To that has its tag keeps it alone.
    #[test]
    fn stateless_reply_copies_what_response_to_copies() {
        let req = parse(SUBSCRIBE);
        let wire = req.stateless_reply(
            503,
            "Service Unavailable",
            "t1",
            &[(HeaderName::RetryAfter, "2")],
        );
        let resp = parse_datagram(wire, &Limits::default()).unwrap();
        assert_eq!(resp.status(), Some(503));
        let mut built = Message::response_to(&req, 503, "Service Unavailable");
        let mut to = req.to().unwrap().clone();
        to.set_tag("t1");
        built.set_header(HeaderName::To, to.to_string());
        let fields = |m: &Message| -> Vec<(HeaderName, String)> {
            m.headers()
                .iter()
                .filter(|f| f.name != HeaderName::RetryAfter && f.name != HeaderName::ContentLength)
                .map(|f| (f.name.clone(), f.value.to_string()))
                .collect()
        };
        assert_eq!(fields(&resp), fields(&built));
        assert_eq!(resp.core().to, built.core().to);
        assert_eq!(resp.to().and_then(|t| t.tag()), Some("t1"));
        assert_eq!(resp.header_value(&HeaderName::RetryAfter), Some("2"));
        assert_eq!(resp.header_value(&HeaderName::ContentLength), Some("0"));
        assert!(resp.body().is_empty());
        // No Record-Route: a refusal establishes nothing.
        assert!(resp.header(&HeaderName::RecordRoute).is_none());

        let tagged = parse(&SUBSCRIBE.replace(
            "To: <sip:alice@example.com>",
            "To: <sip:alice@example.com>;tag=a1",
        ));
        let resp = parse_datagram(
            tagged.stateless_reply(503, "x", "t1", &[]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            resp.header_value(&HeaderName::To),
            Some("<sip:alice@example.com>;tag=a1")
        );
    }
}
