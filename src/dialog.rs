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

/// One dialog, from this element's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
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
    /// The CSeq of the last request we sent.
    pub local_cseq: u32,
    /// The highest CSeq received from the peer.
    pub remote_cseq: Option<u32>,
    pub secure: bool,
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

impl Dialog {
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
        Ok(Dialog {
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
        })
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
        Ok(Dialog {
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
        })
    }

    /// The key a request in this dialog is found by: Call-ID, our tag,
    /// the peer's tag.
    pub fn id(&self) -> String {
        dialog_id(&self.call_id, &self.local_tag, &self.remote_tag)
    }

    /// A new request in the dialog (§12.2.1.1): CSeq incremented,
    /// Request-URI and Route from the route set (loose or strict routing),
    /// From/To with tags. The transaction layer adds Via.
    pub fn request(&mut self, method: Method, contact: &str) -> Message {
        self.local_cseq += 1;
        let target =
            Uri::parse_str(&self.remote_target).unwrap_or_else(|_| Uri::sip(None, "invalid"));
        let first_route = self
            .route_set
            .first()
            .and_then(|r| crate::sip::headers::decode_name_addr(&r.clone().into()).ok());
        let (ruri, routes): (Uri, Vec<String>) = match first_route {
            None => (target, Vec::new()),
            Some(r) if r.uri.params.contains("lr") => (target, self.route_set.clone()),
            Some(r) => {
                // Strict routing: the first route becomes the Request-URI and
                // the remote target goes last in Route (§12.2.1.1).
                let mut rest: Vec<String> = self.route_set[1..].to_vec();
                rest.push(format!("<{}>", self.remote_target));
                let mut u = r.uri.clone();
                u.headers = None;
                (u, rest)
            }
        };
        let mut m = Message::request(method.clone(), ruri);
        for r in routes {
            m.push_header(HeaderName::Route, r);
        }
        m.push_header(HeaderName::MaxForwards, "70");
        m.push_header(
            HeaderName::From,
            format!("{};tag={}", self.local_uri, self.local_tag),
        );
        if self.remote_tag.is_empty() {
            m.push_header(HeaderName::To, self.remote_uri.clone());
        } else {
            m.push_header(
                HeaderName::To,
                format!("{};tag={}", self.remote_uri, self.remote_tag),
            );
        }
        m.push_header(HeaderName::CallId, self.call_id.clone());
        m.push_header(HeaderName::CSeq, format!("{} {method}", self.local_cseq));
        m.push_header(HeaderName::Contact, contact.to_owned());
        m
    }

    /// The URI whose next hop a request in this dialog goes to: the first
    /// Route, else the remote target (RFC 3261 §8.1.2).
    pub fn next_hop(&self) -> Uri {
        self.route_set
            .first()
            .and_then(|r| crate::sip::headers::decode_name_addr(&r.clone().into()).ok())
            .map(|n| n.uri)
            .or_else(|| Uri::parse_str(&self.remote_target).ok())
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
            d.route_set,
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
        assert_eq!(d.remote_tag, "");
        assert_eq!(d.id(), "x;t;");
        let n = d.request(Method::Notify, "<sip:gw@192.0.2.1>");
        assert_eq!(
            n.to().unwrap().tag(),
            None,
            "no tag parameter for a null tag"
        );
    }
}
