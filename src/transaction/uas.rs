//! UAS core checks (RFC 3261 §8.2), applied to every new request before any
//! application logic sees it. Pure: a request in, a response out (or none).

use crate::sip::{HeaderName, Message, Method, Scheme, default_reason};

/// What the core accepts; the application layers declare what they serve.
#[derive(Debug, Clone)]
pub struct UasPolicy {
    /// Methods served (OPTIONS is always answered by the core).
    pub allow: Vec<Method>,
    /// Event packages served (RFC 6665 §8.2.2 `Allow-Events`).
    pub allow_events: Vec<String>,
    /// Body types accepted, e.g. `application/pidf+xml`.
    pub accept: Vec<String>,
    /// Option tags supported (RFC 3261 §20.37).
    pub supported: Vec<String>,
    /// Host put in Warning headers (RFC 3261 §20.43 warn-agent).
    pub agent: String,
    /// Shed a new request that waited longer than this for its agent
    /// (`[sip.overload]`); `None`: never.
    pub max_queue_delay: Option<std::time::Duration>,
    /// Retry-After of a shed request's 503.
    pub overload_retry_after: u32,
    /// New requests in progress (taken, neither answered nor handed on)
    /// past which a new one is refused 503 at admission; requests inside
    /// a dialog get half again. The bound when the wait cannot be
    /// estimated (agents stalled: no rate to divide by), and on memory.
    pub max_in_progress: usize,
}

impl Default for UasPolicy {
    fn default() -> Self {
        UasPolicy {
            allow: vec![Method::Options],
            allow_events: vec![],
            accept: vec![],
            supported: vec![],
            agent: "sip-cpim-gateway".into(),
            max_queue_delay: None,
            overload_retry_after: 2,
            max_in_progress: 16_384,
        }
    }
}

impl UasPolicy {
    fn allow_value(&self) -> String {
        let mut methods: Vec<&str> = vec!["OPTIONS"];
        for m in &self.allow {
            if !methods.contains(&m.as_str()) {
                methods.push(m.as_str());
            }
        }
        methods.join(", ")
    }

    /// The Allow, Allow-Events, Accept and Supported headers.
    pub fn capability_headers(&self, resp: &mut Message) {
        resp.push_header(HeaderName::Allow, self.allow_value());
        if !self.allow_events.is_empty() {
            resp.push_header(HeaderName::AllowEvents, self.allow_events.join(", "));
        }
        if !self.accept.is_empty() {
            resp.push_header(HeaderName::Accept, self.accept.join(", "));
        }
        resp.push_header(HeaderName::Supported, self.supported.join(", "));
    }
}

/// A request as the application sees it: the message, the To tag its
/// responses carry, and who it was authenticated as. Pure data, so that the
/// agents decide their answers without a live transaction (a
/// [`super::ServerTransaction`] holds one and sends what they decide).
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub request: Message,
    /// The To tag of responses when the request had none (§8.2.6.2).
    pub to_tag: String,
    /// The AOR the request was authenticated as (RFC 3261 §22); `None`
    /// when authentication is off or the listener is trusted.
    pub identity: Option<String>,
}

impl IncomingRequest {
    pub fn new(request: Message, to_tag: impl Into<String>) -> IncomingRequest {
        IncomingRequest {
            request,
            to_tag: to_tag.into(),
            identity: None,
        }
    }

    pub fn request(&self) -> &Message {
        &self.request
    }

    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    pub fn to_tag(&self) -> &str {
        &self.to_tag
    }

    /// A response to the request (§8.2.6), To tag included.
    pub fn reply(&self, code: u16, reason: &str) -> Message {
        reply(&self.request, code, reason, &self.to_tag)
    }
}

impl AsRef<IncomingRequest> for IncomingRequest {
    fn as_ref(&self) -> &IncomingRequest {
        self
    }
}

/// A response to `req` with the To tag added (RFC 3261 §8.2.6.2).
pub fn reply(req: &Message, code: u16, reason: &str, to_tag: &str) -> Message {
    let mut resp = Message::response_to(req, code, reason);
    if code > 100 {
        if let Some(to) = req.to().filter(|t| t.tag().is_none()) {
            let mut to = to.clone();
            to.set_tag(to_tag);
            resp.set_header(HeaderName::To, to.to_string());
        }
    }
    resp
}

fn warning(resp: &mut Message, policy: &UasPolicy, text: &str) {
    let text = text.replace(['"', '\\'], "'");
    resp.push_header(
        HeaderName::Warning,
        format!("399 {} \"{}\"", policy.agent, text),
    );
}

/// Runs the checks of RFC 3261 §8.2 in order. `Some(response)` ends the
/// request there; OPTIONS is answered here too (§11.2). ACK and CANCEL are
/// the transaction layer's and never reach this function.
pub fn check_request(req: &Message, policy: &UasPolicy, to_tag: &str) -> Option<Message> {
    let method = req.method()?;
    let core = req.core();
    // Mandatory headers (§8.1.1): missing or repeated ones make the request
    // malformed (400, RFC 4475 §3.3.1 and §3.3.8). Missing Max-Forwards is
    // tolerated for RFC 2543 peers (RFC 4475 §3.4.1).
    let missing = [
        (core.call_id.is_none(), "Call-ID"),
        (core.from.is_none(), "From"),
        (core.to.is_none(), "To"),
        (core.cseq.is_none(), "CSeq"),
    ];
    if let Some((_, name)) = missing.iter().find(|(m, _)| *m) {
        let mut r = reply(req, 400, &format!("Missing {name} Header"), to_tag);
        warning(&mut r, policy, &format!("missing {name} header"));
        return Some(r);
    }
    if let Some(name) = core.repeated.first() {
        let mut r = reply(req, 400, &format!("Duplicate {name} Header"), to_tag);
        warning(&mut r, policy, &format!("{name} must appear once"));
        return Some(r);
    }
    // Max-Forwards 0 (§16.3 step 3): an element that would forward the
    // request answers 483; OPTIONS is answered by this element instead
    // (§11, RFC 4475 §3.3.11).
    if core.max_forwards == Some(0) && *method != Method::Options {
        return Some(reply(req, 483, "Too Many Hops", to_tag));
    }
    // §8.2.1 method inspection: a method this element does not recognise
    // is 501 (§21.5.2, RFC 4475 §3.1.1.2); a known one it does not serve is
    // 405. Both carry Allow.
    if *method != Method::Options && !policy.allow.contains(method) {
        let (code, reason) = match method {
            Method::Extension(_) => (501, "Not Implemented"),
            _ => (405, "Method Not Allowed"),
        };
        let mut r = reply(req, code, reason, to_tag);
        r.push_header(HeaderName::Allow, policy.allow_value());
        return Some(r);
    }
    // §8.2.2.1 Request-URI scheme.
    let scheme = &req.request_uri()?.scheme;
    if !matches!(scheme, Scheme::Sip | Scheme::Sips | Scheme::Pres) {
        let mut r = reply(req, 416, "Unsupported URI Scheme", to_tag);
        warning(
            &mut r,
            policy,
            &format!("Request-URI scheme {} is not supported", scheme.as_str()),
        );
        return Some(r);
    }
    // §8.2.2.3 Require.
    let required = match req.require() {
        Ok(r) => r,
        Err(e) => return Some(bad_header(req, policy, to_tag, &e)),
    };
    let unsupported: Vec<&str> = required
        .iter()
        .map(|t| &**t)
        .filter(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    if !unsupported.is_empty() {
        let mut r = reply(req, 420, "Bad Extension", to_tag);
        r.push_header(HeaderName::Unsupported, unsupported.join(", "));
        return Some(r);
    }
    // §8.2.3 content processing.
    if !req.body().is_empty() {
        let ct = match req.content_type() {
            Ok(ct) => ct,
            Err(e) => return Some(bad_header(req, policy, to_tag, &e)),
        };
        let accepted = ct.as_ref().is_some_and(|ct| {
            policy
                .accept
                .iter()
                .any(|a| a.eq_ignore_ascii_case(ct.essence_str()))
        });
        let encoded = req
            .header_value(&HeaderName::ContentEncoding)
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if !accepted || encoded {
            let mut r = reply(req, 415, "Unsupported Media Type", to_tag);
            if !policy.accept.is_empty() {
                r.push_header(HeaderName::Accept, policy.accept.join(", "));
            }
            if encoded {
                r.push_header(HeaderName::AcceptEncoding, "identity");
            }
            return Some(r);
        }
    }
    if *method == Method::Options {
        // §11.2: the same answer an INVITE would get, with capabilities.
        let mut r = reply(req, 200, default_reason(200), to_tag);
        policy.capability_headers(&mut r);
        return Some(r);
    }
    None
}

fn bad_header(
    req: &Message,
    policy: &UasPolicy,
    to_tag: &str,
    e: &crate::sip::ParseError,
) -> Message {
    let mut r = reply(req, 400, &e.reason_phrase(), to_tag);
    warning(&mut r, policy, &e.to_string());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Limits, parse_datagram};

    fn req(extra: &str, method: &str, uri: &str) -> Message {
        let raw = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=f\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap()
    }

    fn policy() -> UasPolicy {
        UasPolicy {
            allow: vec![Method::Subscribe, Method::Notify],
            allow_events: vec!["presence".into(), "presence.winfo".into()],
            accept: vec!["application/pidf+xml".into()],
            supported: vec![],
            agent: "gw.example.com".into(),
            ..UasPolicy::default()
        }
    }

    #[test]
    fn options_answered_with_capabilities() {
        let r = check_request(&req("", "OPTIONS", "sip:gw@example.com"), &policy(), "t1").unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(
            r.header_value(&HeaderName::Allow),
            Some("OPTIONS, SUBSCRIBE, NOTIFY")
        );
        assert_eq!(
            r.header_value(&HeaderName::AllowEvents),
            Some("presence, presence.winfo")
        );
        assert_eq!(
            r.header_value(&HeaderName::Accept),
            Some("application/pidf+xml")
        );
        assert!(r.has_header(&HeaderName::Supported));
        assert_eq!(r.to().unwrap().tag(), Some("t1"));
    }

    #[test]
    fn method_scheme_require_and_hops() {
        let r = check_request(&req("", "INVITE", "sip:gw@example.com"), &policy(), "t").unwrap();
        assert_eq!(r.status(), Some(405));
        assert_eq!(
            r.header_value(&HeaderName::Allow),
            Some("OPTIONS, SUBSCRIBE, NOTIFY")
        );
        let r = check_request(&req("", "SUBSCRIBE", "tel:+15551234"), &policy(), "t").unwrap();
        assert_eq!(r.status(), Some(416));
        let r = check_request(
            &req("Require: foo, bar\r\n", "SUBSCRIBE", "sip:gw@example.com"),
            &policy(),
            "t",
        )
        .unwrap();
        assert_eq!(
            (r.status(), r.header_value(&HeaderName::Unsupported)),
            (Some(420), Some("foo, bar"))
        );
        let r = check_request(
            &req("Max-Forwards: 0\r\n", "SUBSCRIBE", "sip:gw@example.com"),
            &policy(),
            "t",
        )
        .unwrap();
        assert_eq!(
            r.status(),
            Some(400),
            "a repeated Max-Forwards is caught first"
        );
        assert!(
            check_request(&req("", "SUBSCRIBE", "pres:b@example.com"), &policy(), "t").is_none()
        );
    }

    #[test]
    fn missing_header_names_it() {
        let raw = "SUBSCRIBE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=f\r\nTo: <sip:b@example.com>\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n";
        let m = parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap();
        let r = check_request(&m, &policy(), "t").unwrap();
        assert_eq!(
            (r.status(), r.reason()),
            (Some(400), Some("Missing Call-ID Header"))
        );
        assert!(
            r.header_value(&HeaderName::Warning)
                .unwrap()
                .starts_with("399 gw.example.com \"missing Call-ID")
        );
    }
}
