//! The SIP message core: model, nom parser, serializer, URIs, typed headers.
//!
//! Pure: no sockets, no clocks, no storage. Functions from bytes to values and
//! back, so they can be fuzzed and benchmarked on their own.

pub mod error;
pub mod framing;
pub mod glance;
pub(crate) mod grammar;
pub mod headers;
pub mod message;
pub mod method;
pub mod name;
pub mod params;
pub mod salvage;
mod stateless;
pub mod uri;

pub use error::{ParseError, ValueError};

/// An RFC 3261 `token` character.
pub fn grammar_token_char(b: u8) -> bool {
    grammar::is_token_char(b)
}
pub use framing::{Limits, StreamParser, parse_datagram};
pub use headers::{
    AuthValue, CSeq, Contacts, Event, NameAddr, RetryAfter, SubState, SubscriptionState, Transport,
    Via, Warning,
};
pub use message::{CoreHeaders, HeaderField, Message, StartLine, default_reason};
pub use method::Method;
pub use name::HeaderName;
pub use params::{Param, Params};
pub use uri::{Host, Scheme, Uri};
