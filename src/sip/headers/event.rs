//! Event packages (RFC 6665 §8.2.1, §8.2.3): Event and
//! Subscription-State.

use super::decode::{clamp_u32, decode_with};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, bs_slice, fail, sws, token};
use crate::sip::params::{Param, Params, header_params};
use bytestring::ByteString;
use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

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
}
