//! Why a request is refused, as one typed value, and its one mapping to a
//! SIP final response (with the headers each status requires) and to a CPIM
//! failure. The agents and the router return a [`Reject`]; nothing else
//! writes an error status, reason phrase or its companion header by hand.

use crate::cpim::CpimResponse;
use crate::sip::{HeaderName, Message};
use crate::transaction::IncomingRequest;
use std::borrow::Cow;

/// The methods this server serves (RFC 3261 §20.5, for 405).
pub const ALLOW: &str = "OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400: the reason phrase names the fault (design §3).
    BadRequest(Cow<'static, str>),
    /// 403, with why in the reason phrase when there is more to say.
    Forbidden(Option<Cow<'static, str>>),
    /// 404: not a presentity (or AOR) served here.
    NotFound,
    /// 405 with Allow (RFC 3261 §8.2.1).
    MethodNotAllowed,
    /// 406 with the formats we can send (RFC 3261 §21.4.7).
    NotAcceptable { accept: &'static str },
    /// 412: SIP-If-Match names no publication (RFC 3903 §6 step 5).
    ConditionalRequestFailed,
    /// 415 with the formats we accept (RFC 3261 §21.4.13).
    UnsupportedMediaType { accept: &'static str },
    /// 423 with Min-Expires (RFC 3261 §10.3 step 7, RFC 6665 §4.2.1.1,
    /// RFC 3903 §6 step 6).
    IntervalTooBrief { min: u32 },
    /// 480 with Retry-After: the CPIM side did not answer.
    TemporarilyUnavailable { retry_after: u32 },
    /// 481: the request names no dialog or subscription (RFC 3261 §12.2.2,
    /// RFC 6665 §4.1.2.4).
    DialogGone,
    /// 489 with Allow-Events (RFC 6665 §8.2.1).
    BadEvent { allow: &'static str },
    /// 494: a tuple older than the one held (draft-olson-simple-publish-02
    /// §10 step 8).
    OutOfSync,
    /// 500: a CSeq not above the last one in the dialog or registration
    /// (RFC 3261 §12.2.2, §10.3 step 7).
    CSeqOutOfOrder,
    /// 500: the change could not be made durable, so it is not acknowledged.
    StoreFailure,
    /// 503, with Retry-After when a time can be given (RFC 3261 §21.5.4).
    Unavailable { retry_after: Option<u32> },
    /// The request waited too long for its agent (`[sip.overload]`).
    Overloaded { retry_after: u32 },
    /// 603: the CPIM side refused (seed §7.1).
    Decline,
}

impl Reject {
    /// A 400 naming `fault`.
    pub fn bad(fault: impl Into<Cow<'static, str>>) -> Reject {
        Reject::BadRequest(fault.into())
    }

    /// A 403 saying why.
    pub fn forbidden(why: impl Into<Cow<'static, str>>) -> Reject {
        Reject::Forbidden(Some(why.into()))
    }

    pub fn code(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::Forbidden(_) => 403,
            Reject::NotFound => 404,
            Reject::MethodNotAllowed => 405,
            Reject::NotAcceptable { .. } => 406,
            Reject::ConditionalRequestFailed => 412,
            Reject::UnsupportedMediaType { .. } => 415,
            Reject::IntervalTooBrief { .. } => 423,
            Reject::TemporarilyUnavailable { .. } => 480,
            Reject::DialogGone => 481,
            Reject::BadEvent { .. } => 489,
            Reject::OutOfSync => 494,
            Reject::CSeqOutOfOrder | Reject::StoreFailure => 500,
            Reject::Unavailable { .. } | Reject::Overloaded { .. } => 503,
            Reject::Decline => 603,
        }
    }

    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            Reject::BadRequest(r) => Cow::Borrowed(r.as_ref()),
            Reject::Forbidden(None) => "Forbidden".into(),
            Reject::Forbidden(Some(why)) => format!("Forbidden ({why})").into(),
            Reject::NotFound => "Not Found".into(),
            Reject::MethodNotAllowed => "Method Not Allowed".into(),
            Reject::NotAcceptable { .. } => "Not Acceptable".into(),
            Reject::ConditionalRequestFailed => "Conditional Request Failed".into(),
            Reject::UnsupportedMediaType { .. } => "Unsupported Media Type".into(),
            Reject::IntervalTooBrief { .. } => "Interval Too Brief".into(),
            Reject::TemporarilyUnavailable { .. } => "Temporarily Unavailable".into(),
            Reject::DialogGone => "Subscription Does Not Exist".into(),
            Reject::BadEvent { .. } => "Bad Event".into(),
            Reject::OutOfSync => "Out Of Sync".into(),
            Reject::CSeqOutOfOrder => "CSeq Out Of Order".into(),
            Reject::StoreFailure => "Server Internal Error (store failure)".into(),
            Reject::Unavailable { .. } => "Service Unavailable".into(),
            Reject::Overloaded { .. } => "Service Unavailable (overloaded)".into(),
            Reject::Decline => "Decline".into(),
        }
    }

    /// The final response to `st`'s request, with the header the status
    /// requires.
    pub fn response(&self, to: &impl AsRef<IncomingRequest>) -> Message {
        let mut r = to.as_ref().reply(self.code(), &self.reason());
        match self {
            Reject::MethodNotAllowed => r.push_header(HeaderName::Allow, ALLOW),
            Reject::NotAcceptable { accept } | Reject::UnsupportedMediaType { accept } => {
                r.push_header(HeaderName::Accept, *accept)
            }
            Reject::IntervalTooBrief { min } => {
                r.push_header(HeaderName::MinExpires, min.to_string())
            }
            Reject::TemporarilyUnavailable { retry_after }
            | Reject::Overloaded { retry_after }
            | Reject::Unavailable {
                retry_after: Some(retry_after),
            } => r.push_header(HeaderName::RetryAfter, retry_after.to_string()),
            Reject::BadEvent { allow } => r.push_header(HeaderName::AllowEvents, *allow),
            _ => {}
        }
        r
    }

    /// The same refusal for the CPIM side (design §4: `failure` with the
    /// SIP code and reason).
    pub fn cpim(&self, trans_id: &str) -> CpimResponse {
        CpimResponse::failure(trans_id, self.code(), &self.reason())
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

impl std::error::Error for Reject {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reasons_and_cpim_failures() {
        let cases = [
            (Reject::bad("Missing To Header"), 400, "Missing To Header"),
            (Reject::Forbidden(None), 403, "Forbidden"),
            (
                Reject::forbidden("not this dialog's watcher"),
                403,
                "Forbidden (not this dialog's watcher)",
            ),
            (
                Reject::IntervalTooBrief { min: 60 },
                423,
                "Interval Too Brief",
            ),
            (Reject::DialogGone, 481, "Subscription Does Not Exist"),
            (Reject::BadEvent { allow: "presence" }, 489, "Bad Event"),
            (Reject::CSeqOutOfOrder, 500, "CSeq Out Of Order"),
            (
                Reject::Overloaded { retry_after: 2 },
                503,
                "Service Unavailable (overloaded)",
            ),
            (Reject::Decline, 603, "Decline"),
        ];
        for (r, code, reason) in cases {
            assert_eq!((r.code(), r.reason().as_ref()), (code, reason));
            let c = r.cpim("t1");
            assert_eq!((c.code, c.reason.as_deref()), (Some(code), Some(reason)));
            assert_eq!(r.to_string(), format!("{code} {reason}"));
        }
    }
}
