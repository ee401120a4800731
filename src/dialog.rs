//! Subscription dialog state (RFC 3261 §12, RFC 6665 §4.1.2/§4.2.1): Call-ID,
//! tags, CSeq, route set, remote target — everything needed to send the next
//! request in a dialog, and serializable so dialogs survive a restart.

use crate::sip::{HeaderName, Message, Method, NameAddr, Uri};
use serde::{Deserialize, Serialize};

/// Why a dialog could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("missing Contact header")]
    MissingContact,
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("missing {0} tag")]
    MissingTag(&'static str),
}

/// Strips the tag from a From/To value, keeping display name and URI.
fn without_tag(n: &NameAddr) -> String {
    let mut n = n.clone();
    n.params.remove("tag");
    n.to_string()
}

fn contact_uri(m: &Message) -> Result<Uri, DialogError> {
    match m
        .contacts()
        .map_err(|_| DialogError::Malformed("Contact"))?
    {
        crate::sip::Contacts::List(l) => l
            .into_iter()
            .next()
            .map(|c| c.uri)
            .ok_or(DialogError::MissingContact),
        crate::sip::Contacts::Star => Err(DialogError::Malformed("Contact")),
    }
}

/// The text parts of a dialog, in the order they sit in [`Dialog`]'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Part {
    CallId,
    LocalTag,
    RemoteTag,
    LocalUri,
    RemoteUri,
    RemoteTarget,
}

const PARTS: usize = 6;

/// One dialog, from this element's point of view.
///
/// Kept compact because every live subscription holds one (issue 4: memory
/// per subscription): all text lives in one buffer, `Call-ID`, local tag,
/// remote tag, local URI, remote URI, remote target, then each route value;
/// `ends` holds where each of the six fixed parts ends, `route_ends` where
/// each route ends. Invariant: the offsets are ascending char boundaries of
/// `buf` and the last one is `buf.len()`. Serialized with named fields (see
/// [`DialogFields`]), so stored records do not depend on this layout.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Dialog {
    buf: Box<str>,
    ends: [u32; PARTS],
    route_ends: Box<[u32]>,
    /// The CSeq of the last request we sent.
    pub local_cseq: u32,
    /// The highest CSeq received from the peer.
    pub remote_cseq: Option<u32>,
    pub secure: bool,
}

/// The named form of a [`Dialog`]: how it is built, stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DialogFields {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our URI (From of requests we send in the dialog), without tag.
    pub local_uri: String,
    pub remote_uri: String,
    /// Where requests go (the peer's Contact).
    pub remote_target: String,
    /// Route values in the order they go into Route headers (§12.1.1/§12.1.2).
    pub route_set: Vec<String>,
    /// The CSeq of the last request we sent in the dialog.
    pub local_cseq: u32,
    /// The highest CSeq received from the peer.
    pub remote_cseq: Option<u32>,
    pub secure: bool,
}

impl From<&DialogFields> for Dialog {
    fn from(f: &DialogFields) -> Dialog {
        let fixed = [
            &f.call_id,
            &f.local_tag,
            &f.remote_tag,
            &f.local_uri,
            &f.remote_uri,
            &f.remote_target,
        ];
        let len = fixed.iter().map(|p| p.len()).sum::<usize>()
            + f.route_set.iter().map(String::len).sum::<usize>();
        let mut buf = String::with_capacity(len);
        let mut ends = [0u32; PARTS];
        for (i, p) in fixed.iter().enumerate() {
            buf.push_str(p);
            ends[i] = offset(buf.len());
        }
        let route_ends = f
            .route_set
            .iter()
            .map(|r| {
                buf.push_str(r);
                offset(buf.len())
            })
            .collect();
        Dialog {
            buf: buf.into_boxed_str(),
            ends,
            route_ends,
            local_cseq: f.local_cseq,
            remote_cseq: f.remote_cseq,
            secure: f.secure,
        }
    }
}

/// A buffer offset. Dialog text comes from one SIP message, whose size is
/// capped far below 4 GiB by `[sip.limits]`.
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("dialog text fits in u32 offsets")
}

impl From<&Dialog> for DialogFields {
    fn from(d: &Dialog) -> DialogFields {
        DialogFields {
            call_id: d.call_id().to_owned(),
            local_tag: d.local_tag().to_owned(),
            remote_tag: d.remote_tag().to_owned(),
            local_uri: d.local_uri().to_owned(),
            remote_uri: d.remote_uri().to_owned(),
            remote_target: d.remote_target().to_owned(),
            route_set: d.route_set().map(str::to_owned).collect(),
            local_cseq: d.local_cseq,
            remote_cseq: d.remote_cseq,
            secure: d.secure,
        }
    }
}

impl Serialize for Dialog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DialogFields::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dialog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dialog, D::Error> {
        DialogFields::deserialize(d).map(|f| Dialog::from(&f))
    }
}

impl std::fmt::Debug for Dialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        DialogFields::from(self).fmt(f)
    }
}

impl Dialog {
    fn part(&self, p: Part) -> &str {
        let i = p as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    pub fn call_id(&self) -> &str {
        self.part(Part::CallId)
    }

    pub fn local_tag(&self) -> &str {
        self.part(Part::LocalTag)
    }

    pub fn remote_tag(&self) -> &str {
        self.part(Part::RemoteTag)
    }

    /// Our URI (From of requests we send in the dialog), without tag.
    pub fn local_uri(&self) -> &str {
        self.part(Part::LocalUri)
    }

    pub fn remote_uri(&self) -> &str {
        self.part(Part::RemoteUri)
    }

    /// Where requests go (the peer's Contact).
    pub fn remote_target(&self) -> &str {
        self.part(Part::RemoteTarget)
    }

    /// Route values in the order they go into Route headers (§12.1.1/§12.1.2).
    pub fn route_set(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let base = self.ends[PARTS - 1] as usize;
        (0..self.route_ends.len()).map(move |i| {
            let start = if i == 0 {
                base
            } else {
                self.route_ends[i - 1] as usize
            };
            &self.buf[start..self.route_ends[i] as usize]
        })
    }

    fn first_route(&self) -> Option<&str> {
        self.route_set().next()
    }

    /// Replaces the remote target (a target refresh, RFC 3261 §12.2).
    pub fn set_remote_target(&mut self, target: &str) {
        let mut f = DialogFields::from(&*self);
        f.remote_target = target.to_owned();
        *self = Dialog::from(&f);
    }

    /// Replaces our URI (the From of requests we send).
    pub fn set_local_uri(&mut self, uri: &str) {
        let mut f = DialogFields::from(&*self);
        f.local_uri = uri.to_owned();
        *self = Dialog::from(&f);
    }

    /// The UAS side of a dialog created by `req` (§12.1.1): route set =
    /// Record-Route in order, remote target = Contact, remote CSeq = the
    /// request's.
    pub fn uas(req: &Message, local_tag: &str) -> Result<Dialog, DialogError> {
        let from = req.from().ok_or(DialogError::Malformed("From"))?;
        let to = req.to().ok_or(DialogError::Malformed("To"))?;
        // RFC 3261 §12.1.1: a request without a From tag (RFC 2543 peers,
        // the seed flows) gives a null remote tag.
        let remote_tag = from.tag().unwrap_or("").to_owned();
        let target = contact_uri(req)?;
        let route_set = req
            .record_routes()
            .map_err(|_| DialogError::Malformed("Record-Route"))?
            .iter()
            .map(ToString::to_string)
            .collect();
        Ok(Dialog::from(&DialogFields {
            call_id: req.call_id().unwrap_or_default().to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag,
            local_uri: without_tag(to),
            remote_uri: without_tag(from),
            secure: req
                .request_uri()
                .is_some_and(|u| u.scheme == crate::sip::Scheme::Sips),
            remote_target: target.to_string(),
            route_set,
            local_cseq: 0,
            remote_cseq: req.cseq().map(|c| c.seq),
        }))
    }

    /// The UAC side from our request and its 2xx (§12.1.2): route set =
    /// Record-Route of the response in reverse order.
    pub fn uac(req: &Message, resp: &Message) -> Result<Dialog, DialogError> {
        let from = req.from().ok_or(DialogError::Malformed("From"))?;
        let to = resp.to().ok_or(DialogError::Malformed("To"))?;
        let mut route_set: Vec<String> = resp
            .record_routes()
            .map_err(|_| DialogError::Malformed("Record-Route"))?
            .iter()
            .map(ToString::to_string)
            .collect();
        route_set.reverse();
        Ok(Dialog::from(&DialogFields {
            call_id: req.call_id().unwrap_or_default().to_owned(),
            local_tag: from
                .tag()
                .ok_or(DialogError::MissingTag("From"))?
                .to_owned(),
            remote_tag: to.tag().ok_or(DialogError::MissingTag("To"))?.to_owned(),
            local_uri: without_tag(from),
            remote_uri: without_tag(to),
            remote_target: contact_uri(resp)?.to_string(),
            route_set,
            local_cseq: req.cseq().map_or(1, |c| c.seq),
            remote_cseq: None,
            secure: req
                .request_uri()
                .is_some_and(|u| u.scheme == crate::sip::Scheme::Sips),
        }))
    }

    /// The key a request in this dialog is found by: Call-ID, our tag,
    /// the peer's tag.
    pub fn id(&self) -> String {
        dialog_id(self.call_id(), self.local_tag(), self.remote_tag())
    }

    /// A new request in the dialog (§12.2.1.1): CSeq incremented,
    /// Request-URI and Route from the route set (loose or strict routing),
    /// From/To with tags. The transaction layer adds Via.
    pub fn request(&mut self, method: Method, contact: &str) -> Message {
        self.local_cseq += 1;
        let target =
            Uri::parse_str(self.remote_target()).unwrap_or_else(|_| Uri::sip(None, "invalid"));
        let first_route = self
            .first_route()
            .and_then(|r| crate::sip::headers::decode_name_addr(&r.to_owned().into()).ok());
        let mut m = match first_route {
            None => Message::request(method.clone(), target),
            Some(r) if r.uri.params.contains("lr") => {
                let mut m = Message::request(method.clone(), target);
                for r in self.route_set() {
                    m.push_header(HeaderName::Route, r.to_owned());
                }
                m
            }
            Some(r) => {
                // Strict routing: the first route becomes the Request-URI and
                // the remote target goes last in Route (§12.2.1.1).
                let mut u = r.uri.clone();
                u.headers = None;
                let mut m = Message::request(method.clone(), u);
                for r in self.route_set().skip(1) {
                    m.push_header(HeaderName::Route, r.to_owned());
                }
                m.push_header(HeaderName::Route, format!("<{}>", self.remote_target()));
                m
            }
        };
        m.push_header(HeaderName::MaxForwards, "70");
        m.push_header(
            HeaderName::From,
            format!("{};tag={}", self.local_uri(), self.local_tag()),
        );
        if self.remote_tag().is_empty() {
            m.push_header(HeaderName::To, self.remote_uri().to_owned());
        } else {
            m.push_header(
                HeaderName::To,
                format!("{};tag={}", self.remote_uri(), self.remote_tag()),
            );
        }
        m.push_header(HeaderName::CallId, self.call_id().to_owned());
        m.push_header(HeaderName::CSeq, format!("{} {method}", self.local_cseq));
        m.push_header(HeaderName::Contact, contact.to_owned());
        m
    }

    /// The URI whose next hop a request in this dialog goes to: the first
    /// Route, else the remote target (RFC 3261 §8.1.2).
    pub fn next_hop(&self) -> Uri {
        self.first_route()
            .and_then(|r| crate::sip::headers::decode_name_addr(&r.to_owned().into()).ok())
            .map(|n| n.uri)
            .or_else(|| Uri::parse_str(self.remote_target()).ok())
            .unwrap_or_else(|| Uri::sip(None, "invalid"))
    }

    /// Accepts a request's CSeq (§12.2.2): it must be higher than the last.
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> bool {
        match self.remote_cseq {
            Some(last) if cseq <= last => false,
            _ => {
                self.remote_cseq = Some(cseq);
                true
            }
        }
    }
}

/// `Call-ID;local-tag;remote-tag`.
pub fn dialog_id(call_id: &str, local_tag: &str, remote_tag: &str) -> String {
    format!("{call_id};{local_tag};{remote_tag}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Limits, parse_datagram};

    fn subscribe(extra: &str) -> Message {
        let raw = format!(
            "SUBSCRIBE sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP w.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: \"W\" <sip:w@example.com>;tag=wt\r\nTo: <sip:p@example.com>\r\nCall-ID: d1@w\r\nCSeq: 5 SUBSCRIBE\r\nContact: <sip:w@192.0.2.5:5070;transport=tcp>\r\nEvent: presence\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap()
    }

    #[test]
    fn uas_dialog_and_loose_routing() {
        let req = subscribe("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n");
        let mut d = Dialog::uas(&req, "lt").unwrap();
        assert_eq!(
            d.route_set().collect::<Vec<_>>(),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(d.remote_cseq, Some(5));
        assert_eq!(d.next_hop().to_string(), "sip:p1.example.com;lr");
        let n = d.request(Method::Notify, "<sip:gw@192.0.2.1>");
        assert_eq!(
            n.request_uri().unwrap().to_string(),
            "sip:w@192.0.2.5:5070;transport=tcp"
        );
        assert_eq!(n.routes().unwrap().len(), 2);
        assert_eq!(n.from().unwrap().tag(), Some("lt"));
        assert_eq!(n.to().unwrap().tag(), Some("wt"));
        assert_eq!(n.to().unwrap().display().as_deref(), Some("W"));
        assert_eq!(n.cseq().unwrap().seq, 1);
        assert_eq!(
            d.request(Method::Notify, "<sip:gw@192.0.2.1>")
                .cseq()
                .unwrap()
                .seq,
            2
        );
        assert!(!d.accept_remote_cseq(5), "not higher");
        assert!(d.accept_remote_cseq(6));
    }

    #[test]
    fn stored_form_is_the_named_fields() {
        let req = subscribe("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n");
        let mut d = Dialog::uas(&req, "lt").unwrap();
        d.local_cseq = 7;
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "call_id": "d1@w", "local_tag": "lt", "remote_tag": "wt",
                "local_uri": "<sip:p@example.com>", "remote_uri": "\"W\" <sip:w@example.com>",
                "remote_target": "sip:w@192.0.2.5:5070;transport=tcp",
                "route_set": ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
                "local_cseq": 7, "remote_cseq": 5, "secure": false
            })
        );
        let back: Dialog = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
        d.set_remote_target("sip:w@192.0.2.9");
        assert_eq!(d.remote_target(), "sip:w@192.0.2.9");
        assert_eq!(d.route_set().count(), 2);
        assert_eq!(d.call_id(), "d1@w");
        assert_eq!(d.remote_cseq, Some(5));
    }

    #[test]
    fn strict_routing() {
        let req = subscribe("Record-Route: <sip:strict.example.com>\r\n");
        let mut d = Dialog::uas(&req, "lt").unwrap();
        let n = d.request(Method::Notify, "<sip:gw@192.0.2.1>");
        assert_eq!(
            n.request_uri().unwrap().to_string(),
            "sip:strict.example.com"
        );
        let routes = n.routes().unwrap();
        assert_eq!(
            routes.last().unwrap().uri.to_string(),
            "sip:w@192.0.2.5:5070;transport=tcp"
        );
    }

    #[test]
    fn missing_contact_is_an_error() {
        let raw = "SUBSCRIBE sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP w;branch=z9hG4bK1\r\nFrom: <sip:w@example.com>;tag=wt\r\nTo: <sip:p@example.com>\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n";
        let m = parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap();
        assert_eq!(Dialog::uas(&m, "t"), Err(DialogError::MissingContact));
    }

    #[test]
    fn null_remote_tag_for_rfc2543_requests() {
        let raw = "SUBSCRIBE sip:p@example.com SIP/2.0\r\nVia: SIP/2.0/UDP w;branch=z9hG4bK1\r\nFrom: <pres:user@example.com>\r\nTo: <pres:p@example.com>\r\nCall-ID: x\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:user@w.example.com>\r\nContent-Length: 0\r\n\r\n";
        let m = parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap();
        let mut d = Dialog::uas(&m, "t").unwrap();
        assert_eq!(d.remote_tag(), "");
        assert_eq!(d.id(), "x;t;");
        let n = d.request(Method::Notify, "<sip:gw@192.0.2.1>");
        assert_eq!(
            n.to().unwrap().tag(),
            None,
            "no tag parameter for a null tag"
        );
    }
}
