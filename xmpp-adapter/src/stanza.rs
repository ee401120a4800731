//! XMPP presence stanzas ↔ [`ResourcePresence`] (RFC 8048 §6.2/§6.3 on the
//! XMPP side; RFC 6121 §4.7 for the elements), pure.

use crate::model::{ResourcePresence, Show};
use jid::Jid;
use xmpp_parsers::message::Lang;
use xmpp_parsers::presence::{Presence, Show as XShow, Type};

/// The presence a `<presence/>` of no type or of type `unavailable` says.
pub fn resource_of(p: &Presence) -> ResourcePresence {
    let (lang, status) = p
        .statuses
        .iter()
        .find(|(l, _)| l.0.is_empty())
        .or_else(|| p.statuses.iter().next())
        .map(|(l, s)| (Some(l.0.clone()).filter(|l| !l.is_empty()), Some(s.clone())))
        .unwrap_or((None, None));
    ResourcePresence {
        available: p.type_ == Type::None,
        show: p.show.as_ref().map(|s| match s {
            XShow::Away => Show::Away,
            XShow::Chat => Show::Chat,
            XShow::Dnd => Show::Dnd,
            XShow::Xa => Show::Xa,
        }),
        status,
        lang,
        priority: p.priority.0,
    }
}

/// A presence stanza carrying `rp` (no type when available, `unavailable`
/// otherwise; RFC 8048 §6.3 Table 2).
pub fn stanza_of(from: Jid, to: Jid, rp: &ResourcePresence) -> Presence {
    let mut p = Presence::new(if rp.available {
        Type::None
    } else {
        Type::Unavailable
    })
    .with_from(from)
    .with_to(to);
    if rp.available {
        if let Some(s) = rp.show {
            p = p.with_show(match s {
                Show::Away => XShow::Away,
                Show::Chat => XShow::Chat,
                Show::Dnd => XShow::Dnd,
                Show::Xa => XShow::Xa,
            });
        }
        if rp.priority != 0 {
            p = p.with_priority(rp.priority);
        }
    }
    if let Some(s) = &rp.status {
        p.statuses
            .insert(Lang(rp.lang.clone().unwrap_or_default()), s.clone());
    }
    p
}

/// A subscription-management or probe stanza (RFC 6121 §3, §4.3).
pub fn control(type_: Type, from: Jid, to: Jid) -> Presence {
    Presence::new(type_).with_from(from).with_to(to)
}

/// The `type` attribute as written on the wire, for logs and metrics.
pub fn type_name(t: &Type) -> &'static str {
    match t {
        Type::None => "available",
        Type::Error => "error",
        Type::Probe => "probe",
        Type::Subscribe => "subscribe",
        Type::Subscribed => "subscribed",
        Type::Unavailable => "unavailable",
        Type::Unsubscribe => "unsubscribe",
        Type::Unsubscribed => "unsubscribed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rp = ResourcePresence {
            available: true,
            show: Some(Show::Dnd),
            status: Some("Busy".into()),
            lang: Some("en".into()),
            priority: 5,
        };
        let p = stanza_of(
            Jid::new("bob@example.com/pc").unwrap(),
            Jid::new("alice@xmpp.example.org").unwrap(),
            &rp,
        );
        assert_eq!(resource_of(&p), rp);
        let off = stanza_of(
            Jid::new("bob@example.com/pc").unwrap(),
            Jid::new("alice@xmpp.example.org").unwrap(),
            &ResourcePresence::default(),
        );
        assert_eq!(off.type_, Type::Unavailable);
        assert!(off.show.is_none());
    }
}
