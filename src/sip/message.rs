//! The SIP message model (RFC 3261 §7): start line, header fields kept as
//! unfolded text and decoded on use, and the body.
//!
//! The headers every request needs (Via, From, To, Call-ID, CSeq,
//! Max-Forwards, Content-Length) are decoded once at parse time into
//! [`CoreHeaders`]; a malformed one makes the whole message malformed. All
//! other headers are decoded by their accessor when asked for.

use super::error::{ParseError, ValueError};
use super::headers::{
    self as h, AuthValue, CSeq, Contacts, Event, NameAddr, RetryAfter, SubscriptionState, Via,
    Warning,
};
use super::method::Method;
use super::name::HeaderName;
use super::uri::Uri;
use bytes::Bytes;
use bytestring::ByteString;
use std::fmt::Write as _;

/// `SIP/2.0`, the only version served (others get 505).
pub const SIP_VERSION: &str = "SIP/2.0";

/// The first line of a message.
// Requests (the larger variant) are most of the traffic; boxing the URI would
// cost an allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: ByteString },
}

/// One header field: the name and the unfolded, trimmed value.
#[derive(Debug, Clone)]
pub struct HeaderField {
    pub name: HeaderName,
    pub value: ByteString,
    /// Offset of the value in the received message (0 for built messages);
    /// used to place errors.
    pub offset: u32,
}

impl PartialEq for HeaderField {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.value == other.value
    }
}
impl Eq for HeaderField {}

/// The eagerly decoded headers. For single-valued headers the first
/// occurrence is kept and a repeat is recorded in `repeated` (RFC 4475
/// §3.3.8 messages parse; the UAS answers them with 400).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreHeaders {
    pub via: Vec<Via>,
    pub from: Option<NameAddr>,
    pub to: Option<NameAddr>,
    pub call_id: Option<ByteString>,
    pub cseq: Option<CSeq>,
    pub max_forwards: Option<u8>,
    pub content_length: Option<u32>,
    pub repeated: Vec<HeaderName>,
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    start: StartLine,
    headers: Vec<HeaderField>,
    body: Bytes,
    core: CoreHeaders,
}

/// The fields every response copies from its request (RFC 3261 §8.2.6.2).
pub(super) fn copied_to_response(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

fn is_core(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
    )
}

impl CoreHeaders {
    /// Forgets a single-valued core header, before it is decoded anew.
    fn reset(&mut self, name: &HeaderName) {
        match name {
            HeaderName::From => self.from = None,
            HeaderName::To => self.to = None,
            HeaderName::CallId => self.call_id = None,
            HeaderName::CSeq => self.cseq = None,
            HeaderName::MaxForwards => self.max_forwards = None,
            HeaderName::ContentLength => self.content_length = None,
            _ => {}
        }
        self.repeated.retain(|n| n != name);
    }

    /// Decodes one core header into place.
    fn absorb(&mut self, f: &HeaderField) -> Result<(), ValueError> {
        macro_rules! single {
            ($field:ident, $decode:expr) => {{
                let v = $decode(&f.value)?;
                if self.$field.is_some() {
                    if !self.repeated.contains(&f.name) {
                        self.repeated.push(f.name.clone());
                    }
                } else {
                    self.$field = Some(v);
                }
            }};
        }
        match f.name {
            HeaderName::Via => self.via.extend(h::decode_via(&f.value)?),
            HeaderName::From => single!(from, h::decode_name_addr),
            HeaderName::To => single!(to, h::decode_name_addr),
            HeaderName::CallId => single!(call_id, h::decode_call_id),
            HeaderName::CSeq => single!(cseq, h::decode_cseq),
            HeaderName::MaxForwards => single!(max_forwards, h::decode_max_forwards),
            HeaderName::ContentLength => single!(content_length, h::decode_content_length),
            _ => {}
        }
        Ok(())
    }
}

impl Message {
    /// Assembles a parsed message (used by the framing layer).
    pub(crate) fn from_parts(
        start: StartLine,
        headers: Vec<HeaderField>,
        body: Bytes,
        core: CoreHeaders,
    ) -> Message {
        Message {
            start,
            headers,
            body,
            core,
        }
    }

    /// Decodes the core headers of `headers`; an error names the header.
    pub(crate) fn decode_core(headers: &[HeaderField]) -> Result<CoreHeaders, ParseError> {
        let mut core = CoreHeaders::default();
        for f in headers {
            if is_core(&f.name) {
                core.absorb(f)
                    .map_err(|e| e.in_header(&f.name, f.offset as usize))?;
            }
        }
        Ok(core)
    }

    /// A new request with no headers (RFC 3261 §8.1.1 lists what to add).
    pub fn request(method: Method, uri: Uri) -> Message {
        Message {
            start: StartLine::Request { method, uri },
            headers: Vec::with_capacity(12),
            body: Bytes::new(),
            core: CoreHeaders::default(),
        }
    }

    /// A new response with no headers.
    pub fn response(code: u16, reason: &str) -> Message {
        let reason = if reason.is_empty() {
            default_reason(code)
        } else {
            reason
        };
        Message {
            start: StartLine::Response {
                code,
                reason: ByteString::from(reason.to_owned()),
            },
            headers: Vec::with_capacity(10),
            body: Bytes::new(),
            core: CoreHeaders::default(),
        }
    }

    /// A response to `req` per RFC 3261 §8.2.6.2: Via (all values, in
    /// order), From, To, Call-ID and CSeq copied. The To tag, when needed, is
    /// the caller's to add.
    ///
    /// A response that can establish a dialog (101–299 to a dialog-creating
    /// request outside a dialog) also carries every Record-Route of the
    /// request, in order (RFC 3261 §12.1.1): without them the UAC's route
    /// set is empty, and its in-dialog requests bypass the proxies that
    /// asked to stay on the path.
    pub fn response_to(req: &Message, code: u16, reason: &str) -> Message {
        let mut resp = Message::response(code, reason);
        let establishes = (101..300).contains(&code)
            && matches!(
                req.method(),
                Some(Method::Subscribe | Method::Invite | Method::Refer)
            )
            && req.to().is_some_and(|t| t.tag().is_none());
        for f in &req.headers {
            if copied_to_response(&f.name) || (establishes && f.name == HeaderName::RecordRoute) {
                resp.headers.push(HeaderField {
                    name: f.name.clone(),
                    value: f.value.clone(),
                    offset: 0,
                });
            }
        }
        resp.core = CoreHeaders {
            via: req.core.via.clone(),
            from: req.core.from.clone(),
            to: req.core.to.clone(),
            call_id: req.core.call_id.clone(),
            cseq: req.core.cseq.clone(),
            ..CoreHeaders::default()
        };
        resp
    }

    // ----- start line -----

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn set_request_uri(&mut self, new: Uri) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    // ----- core headers -----

    pub fn core(&self) -> &CoreHeaders {
        &self.core
    }

    pub fn via(&self) -> &[Via] {
        &self.core.via
    }

    pub fn top_via(&self) -> Option<&Via> {
        self.core.via.first()
    }

    pub fn from(&self) -> Option<&NameAddr> {
        self.core.from.as_ref()
    }

    pub fn to(&self) -> Option<&NameAddr> {
        self.core.to.as_ref()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.core.call_id.as_deref()
    }

    pub fn cseq(&self) -> Option<&CSeq> {
        self.core.cseq.as_ref()
    }

    pub fn max_forwards(&self) -> Option<u8> {
        self.core.max_forwards
    }

    pub fn content_length(&self) -> Option<u32> {
        self.core.content_length
    }

    // ----- raw header access -----

    pub fn headers(&self) -> &[HeaderField] {
        &self.headers
    }

    /// The first field with this name.
    pub fn header(&self, name: &HeaderName) -> Option<&HeaderField> {
        self.headers.iter().find(|f| &f.name == name)
    }

    /// The value of the first field with this name.
    pub fn header_value(&self, name: &HeaderName) -> Option<&str> {
        self.header(name).map(|f| &*f.value)
    }

    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.header(name).is_some()
    }

    /// Every field with this name, in order.
    pub fn fields<'a>(
        &'a self,
        name: &'a HeaderName,
    ) -> impl Iterator<Item = &'a HeaderField> + 'a {
        self.headers.iter().filter(move |f| &f.name == name)
    }

    // ----- lazily decoded headers -----

    /// Decodes the first field named `name` (single-valued headers).
    pub fn typed<T>(
        &self,
        name: &HeaderName,
        decode: fn(&ByteString) -> Result<T, ValueError>,
    ) -> Result<Option<T>, ParseError> {
        match self.header(name) {
            None => Ok(None),
            Some(f) => decode(&f.value)
                .map(Some)
                .map_err(|e| e.in_header(name, f.offset as usize)),
        }
    }

    /// Decodes every field named `name` and concatenates the lists.
    pub fn typed_list<T>(
        &self,
        name: &HeaderName,
        decode: fn(&ByteString) -> Result<Vec<T>, ValueError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut out = Vec::new();
        for f in self.fields(name) {
            out.extend(decode(&f.value).map_err(|e| e.in_header(name, f.offset as usize))?);
        }
        Ok(out)
    }

    /// All Contact values; `Contacts::Star` when a `*` is present.
    pub fn contacts(&self) -> Result<Contacts, ParseError> {
        let mut list = Vec::new();
        for f in self.fields(&HeaderName::Contact) {
            match h::decode_contact(&f.value)
                .map_err(|e| e.in_header(&f.name, f.offset as usize))?
            {
                Contacts::Star => return Ok(Contacts::Star),
                Contacts::List(l) => list.extend(l),
            }
        }
        Ok(Contacts::List(list))
    }

    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.typed_list(&HeaderName::Route, h::decode_route)
    }

    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.typed_list(&HeaderName::RecordRoute, h::decode_route)
    }

    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.typed(&HeaderName::Expires, h::decode_delta_seconds)
    }

    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.typed(&HeaderName::MinExpires, h::decode_delta_seconds)
    }

    pub fn event(&self) -> Result<Option<Event>, ParseError> {
        self.typed(&HeaderName::Event, h::decode_event)
    }

    pub fn allow_events(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::AllowEvents, h::decode_token_list)
    }

    pub fn subscription_state(&self) -> Result<Option<SubscriptionState>, ParseError> {
        self.typed(&HeaderName::SubscriptionState, h::decode_subscription_state)
    }

    pub fn sip_etag(&self) -> Result<Option<ByteString>, ParseError> {
        self.typed(&HeaderName::SipETag, h::decode_entity_tag)
    }

    /// All SIP-If-Match values (RFC 3903 §6: more than one is a 400).
    pub fn sip_if_match(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::SipIfMatch, |v| {
            h::decode_entity_tag(v).map(|t| vec![t])
        })
    }

    pub fn require(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::Require, h::decode_token_list)
    }

    pub fn proxy_require(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::ProxyRequire, h::decode_token_list)
    }

    pub fn supported(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::Supported, h::decode_token_list)
    }

    pub fn unsupported(&self) -> Result<Vec<ByteString>, ParseError> {
        self.typed_list(&HeaderName::Unsupported, h::decode_token_list)
    }

    pub fn allow(&self) -> Result<Vec<Method>, ParseError> {
        self.typed_list(&HeaderName::Allow, h::decode_allow)
    }

    pub fn content_type(&self) -> Result<Option<mime::Mime>, ParseError> {
        self.typed(&HeaderName::ContentType, h::decode_content_type)
    }

    /// Accept values; `None` when the header is absent (RFC 3261 §20.1:
    /// absent means `application/sdp` for INVITE, the package default for
    /// SUBSCRIBE), `Some(empty)` when present and empty.
    pub fn accept(&self) -> Result<Option<Vec<mime::Mime>>, ParseError> {
        if !self.has_header(&HeaderName::Accept) {
            return Ok(None);
        }
        self.typed_list(&HeaderName::Accept, h::decode_accept)
            .map(Some)
    }

    pub fn authorization(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.typed_list(&HeaderName::Authorization, h::decode_auth)
    }

    pub fn proxy_authorization(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.typed_list(&HeaderName::ProxyAuthorization, h::decode_auth)
    }

    pub fn www_authenticate(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.typed_list(&HeaderName::WwwAuthenticate, h::decode_auth)
    }

    pub fn proxy_authenticate(&self) -> Result<Vec<AuthValue>, ParseError> {
        self.typed_list(&HeaderName::ProxyAuthenticate, h::decode_auth)
    }

    pub fn date(&self) -> Result<Option<std::time::SystemTime>, ParseError> {
        self.typed(&HeaderName::Date, h::decode_date)
    }

    pub fn warnings(&self) -> Result<Vec<Warning>, ParseError> {
        self.typed_list(&HeaderName::Warning, h::decode_warning)
    }

    pub fn retry_after(&self) -> Result<Option<RetryAfter>, ParseError> {
        self.typed(&HeaderName::RetryAfter, h::decode_retry_after)
    }

    /// Decodes every header that has a typed form; the first failure is
    /// returned. `lint` and strict receivers use this; the core headers were
    /// already checked at parse time.
    pub fn check_headers(&self) -> Result<(), ParseError> {
        self.contacts()?;
        self.routes()?;
        self.record_routes()?;
        self.typed_list(&HeaderName::ReplyTo, |v| {
            h::decode_name_addr(v).map(|n| vec![n])
        })?;
        self.expires()?;
        self.min_expires()?;
        self.event()?;
        self.allow_events()?;
        self.subscription_state()?;
        self.sip_etag()?;
        self.sip_if_match()?;
        self.require()?;
        self.proxy_require()?;
        self.supported()?;
        self.unsupported()?;
        self.allow()?;
        self.content_type()?;
        self.accept()?;
        self.authorization()?;
        self.proxy_authorization()?;
        self.www_authenticate()?;
        self.proxy_authenticate()?;
        self.date()?;
        self.warnings()?;
        self.retry_after()?;
        Ok(())
    }

    // ----- building -----

    /// Appends a header field. Core headers are decoded at once; a value
    /// that does not decode is kept as text but leaves the core field unset.
    pub fn push_header(&mut self, name: HeaderName, value: impl Into<ByteString>) {
        let f = HeaderField {
            name,
            value: value.into(),
            offset: 0,
        };
        if is_core(&f.name) {
            let _ = self.core.absorb(&f);
        }
        self.headers.push(f);
    }

    /// Inserts a header field before the first one (e.g. a new top Via).
    pub fn prepend_header(&mut self, name: HeaderName, value: impl Into<ByteString>) {
        let core = is_core(&name);
        self.headers.insert(
            0,
            HeaderField {
                name,
                value: value.into(),
                offset: 0,
            },
        );
        if core {
            self.refresh_core();
        }
    }

    /// Replaces every field of this name by one with `value`, at the
    /// position of the first (or at the end).
    pub fn set_header(&mut self, name: HeaderName, value: impl Into<ByteString>) {
        let value = value.into();
        match self.headers.iter().position(|f| f.name == name) {
            Some(pos) => {
                self.headers[pos].value = value;
                self.headers[pos].offset = 0;
                let mut k = 0;
                self.headers.retain(|f| {
                    let keep = k <= pos || f.name != name;
                    k += 1;
                    keep
                });
            }
            None => self.headers.push(HeaderField {
                name: name.clone(),
                value,
                offset: 0,
            }),
        }
        if name == HeaderName::Via {
            self.refresh_core();
        } else if is_core(&name) {
            // One field of a single-valued core header now: decode just it
            // (a full refresh re-decodes every core header; `reply` sets
            // To on every response).
            self.core.reset(&name);
            if let Some(f) = self.headers.iter().find(|f| f.name == name) {
                let _ = self.core.absorb(f);
            }
        }
    }

    pub fn remove_header(&mut self, name: &HeaderName) {
        self.headers.retain(|f| &f.name != name);
        if is_core(name) {
            self.refresh_core();
        }
    }

    /// Replaces the first Via value (e.g. to add `received`/`rport`, RFC
    /// 3261 §18.2.1). Other values of the same header line are kept.
    pub fn set_top_via(&mut self, via: &Via) {
        if let Some(pos) = self.headers.iter().position(|f| f.name == HeaderName::Via) {
            let vias = h::decode_via(&self.headers[pos].value).unwrap_or_default();
            let mut line = via.to_string();
            for v in vias.iter().skip(1) {
                let _ = write!(line, ", {v}");
            }
            self.headers[pos].value = ByteString::from(line);
            if let Some(first) = self.core.via.first_mut() {
                *first = via.clone();
            }
        }
    }

    /// Removes the first Via value (a response going upstream, RFC 3261 §18.1.2).
    pub fn remove_top_via(&mut self) {
        if let Some(pos) = self.headers.iter().position(|f| f.name == HeaderName::Via) {
            let vias = h::decode_via(&self.headers[pos].value).unwrap_or_default();
            if vias.len() > 1 {
                let rest: Vec<String> = vias[1..].iter().map(ToString::to_string).collect();
                self.headers[pos].value = ByteString::from(rest.join(", "));
            } else {
                self.headers.remove(pos);
            }
            self.refresh_core();
        }
    }

    /// Sets the body and its Content-Type (Content-Length is written by the
    /// serializer).
    pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
        self.body = body.into();
        self.set_header(
            HeaderName::ContentType,
            ByteString::from(content_type.to_owned()),
        );
        self.sync_content_length();
    }

    /// Makes `Content-Length` equal the body length, adding it if absent.
    pub fn sync_content_length(&mut self) {
        let len = ByteString::from(self.body.len().to_string());
        self.set_header(HeaderName::ContentLength, len);
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    fn refresh_core(&mut self) {
        let mut core = CoreHeaders::default();
        for f in &self.headers {
            if is_core(&f.name) {
                let _ = core.absorb(f);
            }
        }
        self.core = core;
    }

    // ----- serializing -----

    /// Canonical wire form: CRLF line ends, long header names, one field per
    /// line, Content-Length equal to the body length (added when absent).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len_hint());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(Adapter(out), "{method} {uri} {SIP_VERSION}\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(Adapter(out), "{SIP_VERSION} {code:03} {reason}\r\n");
            }
        }
        let mut wrote_length = false;
        for f in &self.headers {
            if f.name == HeaderName::ContentLength {
                if wrote_length {
                    // A repeated Content-Length is written once only.
                    continue;
                }
                wrote_length = true;
                let _ = write!(Adapter(out), "Content-Length: {}\r\n", self.body.len());
                continue;
            }
            out.extend_from_slice(f.name.as_str().as_bytes());
            if f.value.is_empty() {
                // An empty value (e.g. `Supported:`) without trailing space.
                out.extend_from_slice(b":\r\n");
            } else {
                out.extend_from_slice(b": ");
                out.extend_from_slice(f.value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if !wrote_length {
            let _ = write!(Adapter(out), "Content-Length: {}\r\n", self.body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::new();
        self.write_to(&mut v);
        // Transactions keep these bytes for retransmission (a server
        // transaction for Timer J's 32 s): trimmed to length they take one
        // exact allocation, not the over-reserved buffer plus the shared
        // header `Bytes` adds when length and capacity differ.
        v.shrink_to_fit();
        Bytes::from(v)
    }

    fn encoded_len_hint(&self) -> usize {
        64 + self.body.len()
            + self
                .headers
                .iter()
                .map(|f| f.value.len() + 24)
                .sum::<usize>()
    }
}

/// `fmt::Write` over a byte vector.
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// The RFC 3261 §21 reason phrase for a status code.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        489 => "Bad Event",
        491 => "Request Pending",
        494 => "Out Of Sync",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match code / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirection",
            4 => "Request Failure",
            5 => "Server Failure",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sip::framing::{Limits, parse_datagram};

    pub(in crate::sip) fn parse(text: &str) -> Message {
        parse_datagram(Bytes::from(text.replace('\n', "\r\n")), &Limits::default()).unwrap()
    }

    pub(in crate::sip) const SUBSCRIBE: &str = "SUBSCRIBE sip:alice@example.com SIP/2.0
Via: SIP/2.0/UDP proxy2.example.net;branch=z9hG4bK2
Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1
Record-Route: <sip:proxy2.example.net;lr>
Record-Route: <sip:proxy1.example.net;lr;foo=bar>
Max-Forwards: 69
From: <sip:w@example.com>;tag=w
To: <sip:alice@example.com>
Call-ID: rr1
CSeq: 1 SUBSCRIBE
Contact: <sip:w@192.0.2.7>
Event: presence
Content-Length: 0

";

    fn record_routes(m: &Message) -> Vec<String> {
        m.fields(&HeaderName::RecordRoute)
            .map(|f| f.value.to_string())
            .collect()
    }

    // RFC 3261 §12.1.1: every Record-Route value, in order, unchanged.
    #[test]
    fn a_dialog_establishing_response_copies_the_record_route() {
        let req = parse(SUBSCRIBE);
        for code in [200, 202] {
            let resp = Message::response_to(&req, code, "");
            assert_eq!(
                record_routes(&resp),
                [
                    "<sip:proxy2.example.net;lr>",
                    "<sip:proxy1.example.net;lr;foo=bar>"
                ]
            );
        }
    }

    #[test]
    fn no_record_route_where_no_dialog_is_established() {
        let req = parse(SUBSCRIBE);
        // A final error or a 100 establishes nothing.
        for code in [100, 400, 489, 503] {
            assert!(
                record_routes(&Message::response_to(&req, code, "")).is_empty(),
                "{code}"
            );
        }
        // A refresh inside the dialog keeps the route set it has (§12.2).
        let refresh = parse(&SUBSCRIBE.replace(
            "To: <sip:alice@example.com>",
            "To: <sip:alice@example.com>;tag=n",
        ));
        assert!(record_routes(&Message::response_to(&refresh, 200, "")).is_empty());
        // Nor does a PUBLISH, which never creates a dialog.
        let publish = parse(&SUBSCRIBE.replace("SUBSCRIBE", "PUBLISH"));
        assert!(record_routes(&Message::response_to(&publish, 200, "")).is_empty());
    }

    /// `set_header` on a single-valued core header decodes just that field,
    /// and leaves the core as decoding the whole message again would: the
    /// new value in place, a repetition of it forgotten, the rest kept.
    #[test]
    fn set_header_refreshes_the_core_it_touches() {
        let mut m = parse(&SUBSCRIBE.replace(
            "To: <sip:alice@example.com>",
            "To: <sip:a@x>\nTo: <sip:b@x>",
        ));
        assert!(m.core().repeated.contains(&HeaderName::To));
        m.set_header(HeaderName::To, "<sip:alice@example.com>;tag=t9");
        let again = parse_datagram(m.to_bytes(), &Limits::default()).unwrap();
        assert_eq!(m.core(), again.core());
        assert_eq!(m.to().and_then(|t| t.tag()), Some("t9"));
        assert!(m.core().repeated.is_empty());
    }
}
