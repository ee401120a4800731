//! Typed header values (RFC 3261 §20, RFC 6665 §8.2, RFC 3903 §11).
//!
//! Each `decode_*` function takes one header field value (already unfolded)
//! and returns the typed value or a [`ValueError`] with the offset inside the
//! value. Values keep `ByteString` slices of the message, so decoding does not
//! copy text. Every type prints itself in canonical wire form (`Display`).

use super::error::ValueError;
use super::grammar::bs_slice;
use super::grammar::{self as g, In, PResult, fail, peek_sep, quoted_string, sep, sws, token};
use super::method::Method;
use super::params::{Param, Params, header_params};
use super::uri::{Host, Uri, UriContext, host, uri};
use bytestring::ByteString;
use nom::Parser;
use nom::bytes::complete::take_while1;
use std::fmt;

/// Runs `p` over the whole value: trailing whitespace is allowed, anything
/// else left over is an error.
fn decode_with<'a, O>(
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
fn comma_list<'a, O>(
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
fn opt_comma_list<'a, O>(
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

// ---------------------------------------------------------------------------
// Via (RFC 3261 §20.42, §18.2.1; RFC 3581 rport)

/// The transport of a Via header or a `transport=` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other(ByteString),
}

impl Transport {
    pub fn parse(s: &str) -> Transport {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => Transport::Other(ByteString::from(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// RFC 3261 §17.1.1.1: reliable transports set no retransmit timers.
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Default port (RFC 3261 §19.1.2).
    pub fn default_port(&self) -> u16 {
        match self {
            Transport::Tls | Transport::Wss => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `protocol-name "/" protocol-version`, normally `SIP/2.0`.
    pub protocol: ByteString,
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

/// RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::default();
        params.push(Param::new(
            "branch",
            Some(ByteString::from(branch.to_owned())),
        ));
        Via {
            protocol: ByteString::from_static("SIP/2.0"),
            transport,
            host,
            port,
            params,
        }
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The branch when it carries the RFC 3261 magic cookie (and more than
    /// the cookie itself, RFC 4475 §3.2.1).
    pub fn rfc3261_branch(&self) -> Option<&str> {
        self.branch()
            .filter(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    pub fn received(&self) -> Option<std::net::IpAddr> {
        self.params
            .get("received")
            .flatten()
            .and_then(|v| v.parse().ok())
    }

    /// `None` absent, `Some(None)` present without value (RFC 3581 request).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    pub fn maddr(&self) -> Option<&str> {
        self.params.get("maddr").flatten()
    }

    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

fn via_parm<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Via> + '_ {
    move |i| {
        let start = i;
        let (i, name) = g::expect("expected a protocol name", token)(i)?;
        let (i, _) = sep(b'/')(i)?;
        let (i, version) = g::expect("expected a protocol version", token)(i)?;
        let (i, _) = sep(b'/')(i)?;
        let (i, transport) = g::expect("expected a transport", token)(i)?;
        let (i, ws) = take_while1::<_, _, g::GrammarError>(g::is_wsp)
            .parse(i)
            .map_err(|_| {
                nom::Err::Error(g::GrammarError {
                    at: i,
                    reason: "expected whitespace before sent-by",
                })
            })?;
        let _ = ws;
        let (i, h) = host(src)(i)?;
        let (i, port) = if peek_sep(i, b':') {
            let (i, _) = sep(b':')(i)?;
            let (i, p) = g::decimal(65535, "expected a port number")(i)?;
            (i, Some(p as u16))
        } else {
            (i, None)
        };
        let (i, params) = header_params(src)(i)?;
        // Typed checks of the parameters RFC 3261 §20.42 defines.
        for p in params.iter() {
            let v = p.value.as_deref();
            let ok = match p.name.to_ascii_lowercase().as_str() {
                "ttl" => v.is_some_and(|v| v.len() <= 3 && v.parse::<u8>().is_ok()),
                "received" => v.is_some_and(|v| v.parse::<std::net::IpAddr>().is_ok()),
                "rport" => v.is_none_or(|v| v.parse::<u16>().is_ok()),
                "branch" | "maddr" => v.is_some_and(|v| !v.is_empty()),
                _ => true,
            };
            if !ok {
                return fail(start, "invalid Via parameter value");
            }
        }
        let protocol = if name == b"SIP" && version == b"2.0" {
            ByteString::from_static("SIP/2.0")
        } else {
            ByteString::from(format!(
                "{}/{}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(version)
            ))
        };
        let transport = Transport::parse(std::str::from_utf8(transport).unwrap_or(""));
        Ok((
            i,
            Via {
                protocol,
                transport,
                host: h,
                port,
                params,
            },
        ))
    }
}

/// `Via: via-parm *( COMMA via-parm )`.
pub fn decode_via(src: &ByteString) -> Result<Vec<Via>, ValueError> {
    decode_with(src, comma_list(via_parm(src)))
}

// ---------------------------------------------------------------------------
// name-addr / addr-spec (From, To, Contact, Route, Record-Route, Reply-To)

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

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
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

// ---------------------------------------------------------------------------
// Single-token and numeric headers

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

// ---------------------------------------------------------------------------
// Event packages (RFC 6665 §8.2.1, §8.2.3)

/// `Event: event-type *( SEMI event-param )`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `presence`, `presence.winfo`, ... (compared case-sensitively? RFC
    /// 6665 §8.2.1: tokens compared case-insensitively).
    pub package: ByteString,
    pub params: Params,
}

impl Event {
    pub fn new(package: &str) -> Event {
        Event {
            package: ByteString::from(package.to_owned()),
            params: Params::default(),
        }
    }

    pub fn id(&self) -> Option<&str> {
        self.params.get("id").flatten()
    }

    pub fn is(&self, package: &str) -> bool {
        self.package.eq_ignore_ascii_case(package)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.package, self.params)
    }
}

pub fn decode_event(src: &ByteString) -> Result<Event, ValueError> {
    decode_with(src, |i| {
        let (i, _) = sws(i)?;
        let (i, t) = g::expect("expected an event type", token)(i)?;
        let (i, params) = header_params(src)(i)?;
        Ok((
            i,
            Event {
                package: bs_slice(src, t),
                params,
            },
        ))
    })
}

/// The state of a subscription (RFC 6665 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
    Terminated,
    Extension(ByteString),
}

impl SubState {
    pub fn as_str(&self) -> &str {
        match self {
            SubState::Active => "active",
            SubState::Pending => "pending",
            SubState::Terminated => "terminated",
            SubState::Extension(s) => s,
        }
    }
}

/// `Subscription-State: substate-value *( SEMI subexp-params )`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub state: SubState,
    pub params: Params,
}

impl SubscriptionState {
    pub fn new(state: SubState) -> SubscriptionState {
        SubscriptionState {
            state,
            params: Params::default(),
        }
    }

    pub fn with_param(mut self, name: &str, value: impl fmt::Display) -> SubscriptionState {
        self.params.set(Param::new(
            ByteString::from(name.to_owned()),
            Some(ByteString::from(value.to_string())),
        ));
        self
    }

    pub fn reason(&self) -> Option<&str> {
        self.params.get("reason").flatten()
    }

    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .map(clamp_u32)
    }

    pub fn retry_after(&self) -> Option<u32> {
        self.params
            .get("retry-after")
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .map(clamp_u32)
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.state.as_str(), self.params)
    }
}

pub fn decode_subscription_state(src: &ByteString) -> Result<SubscriptionState, ValueError> {
    decode_with(src, |i| {
        let (i, _) = sws(i)?;
        let (i, t) = g::expect("expected a subscription state", token)(i)?;
        let state = if t.eq_ignore_ascii_case(b"active") {
            SubState::Active
        } else if t.eq_ignore_ascii_case(b"pending") {
            SubState::Pending
        } else if t.eq_ignore_ascii_case(b"terminated") {
            SubState::Terminated
        } else {
            SubState::Extension(bs_slice(src, t))
        };
        let (r, params) = header_params(src)(i)?;
        for name in ["expires", "retry-after"] {
            if let Some(p) = params.find(name) {
                let ok = p
                    .value
                    .as_deref()
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return fail(i, "expires and retry-after must be delta-seconds");
                }
            }
        }
        Ok((r, SubscriptionState { state, params }))
    })
}

// ---------------------------------------------------------------------------
// Media types (Content-Type, Accept)

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

// ---------------------------------------------------------------------------
// Authentication (RFC 3261 §25.1 credentials / challenge, RFC 7616/8760)

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

// ---------------------------------------------------------------------------
// Date, Warning, Retry-After

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

/// Port of a `sent-by` or host with default; used by response routing.
pub fn sent_by_port(via: &Via) -> u16 {
    via.port.unwrap_or_else(|| via.transport.default_port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &'static str) -> ByteString {
        ByteString::from_static(s)
    }

    #[test]
    fn via_with_spaces_and_params() {
        let v = decode_via(&bs("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, Transport::Tcp);
        assert_eq!(v[0].host, Host::Domain(bs("spindle.example.com")));
        assert_eq!(v[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v[1].host, Host::V4("192.168.255.111".parse().unwrap()));
        assert_eq!(
            v[1].to_string(),
            "SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239"
        );
    }

    #[test]
    fn via_params_typed() {
        let v = &decode_via(&bs("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKabc;received=192.0.2.1;rport;ttl=16;maddr=224.2.0.1")).unwrap()[0];
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(v.rfc3261_branch(), Some("z9hG4bKabc"));
        assert!(decode_via(&bs("SIP/2.0/UDP h;ttl=300")).is_err());
        assert!(decode_via(&bs("SIP/2.0/UDP h;received=nohost")).is_err());
        assert!(decode_via(&bs("SIP/2.0/UDP 192.0.2.15;;,;,,")).is_err());
    }

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

    #[test]
    fn event_and_subscription_state() {
        let e = decode_event(&bs("presence;id=abc")).unwrap();
        assert!(e.is("Presence"));
        assert_eq!(e.id(), Some("abc"));
        let s = decode_subscription_state(&bs("active; expires=600")).unwrap();
        assert_eq!(s.state, SubState::Active);
        assert_eq!(s.expires(), Some(600));
        let t = decode_subscription_state(&bs("terminated;reason=timeout;retry-after=30")).unwrap();
        assert_eq!(t.reason(), Some("timeout"));
        assert_eq!(t.retry_after(), Some(30));
        assert!(decode_subscription_state(&bs("active;expires=soon")).is_err());
        assert_eq!(
            SubscriptionState::new(SubState::Active)
                .with_param("expires", 3600)
                .to_string(),
            "active;expires=3600"
        );
    }

    #[test]
    fn media_types() {
        let c = decode_content_type(&bs("application / pidf+xml ; charset=\"utf-8\"")).unwrap();
        assert_eq!(c.essence_str(), "application/pidf+xml");
        let a = decode_accept(&bs("application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag")).unwrap();
        assert_eq!(a.len(), 6);
        assert!(decode_accept(&bs("")).unwrap().is_empty());
    }

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
