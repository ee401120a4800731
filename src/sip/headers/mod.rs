//! Typed header values (RFC 3261 §20, RFC 6665 §8.2, RFC 3903 §11).
//!
//! Each `decode_*` function takes one header field value (already unfolded)
//! and returns the typed value or a [`ValueError`](super::ValueError) with
//! the offset inside the value. Values keep `ByteString` slices of the
//! message, so decoding does not copy text. Every type prints itself in
//! canonical wire form (`Display`).
//!
//! The files, by header family:
//! - `via.rs`: Via and its transport;
//! - `addr.rs`: name-addr / addr-spec (From, To, Contact, Route,
//!   Record-Route, Reply-To);
//! - `simple.rs`: single-token and numeric headers (Call-ID, CSeq,
//!   Max-Forwards, Content-Length, Expires, SIP-ETag, token lists, Allow);
//! - `event.rs`: event packages (Event, Subscription-State);
//! - `media.rs`: media types (Content-Type, Accept);
//! - `auth.rs`: credentials and challenges;
//! - `info.rs`: Date, Warning, Retry-After;
//! - `decode.rs`: what they share (whole-value decoding, comma lists).

mod addr;
mod auth;
mod decode;
mod event;
mod info;
mod media;
mod simple;
mod via;

pub use addr::{Contacts, NameAddr, decode_contact, decode_name_addr, decode_route};
pub use auth::{AuthValue, decode_auth};
pub use event::{Event, SubState, SubscriptionState, decode_event, decode_subscription_state};
pub use info::{RetryAfter, Warning, decode_date, decode_retry_after, decode_warning};
pub use media::{decode_accept, decode_content_type};
pub use simple::{
    CSeq, decode_allow, decode_call_id, decode_content_length, decode_cseq, decode_delta_seconds,
    decode_entity_tag, decode_max_forwards, decode_token_list,
};
pub use via::{MAGIC_COOKIE, Transport, Via, decode_via, sent_by_port};
