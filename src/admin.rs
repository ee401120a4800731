//! Read-only operator views (issue 7: `/admin/v1/presentities`,
//! `/admin/v1/subscriptions`, `/admin/v1/dialogs/{id}`): what the presence
//! agent and the gateway hold, so an operator can see why a watcher gets no
//! NOTIFY without reading the database.
//!
//! Like `cpim.rs`, this module is only the shared vocabulary: the presence
//! agent and the gateway each fill these from their own state, and `http/`
//! serves them, so neither agent imports the other.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which mapping a subscription belongs to (the `kind` label of the
/// `sipgw_subscriptions_active` metric as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionKind {
    /// A watcher (SIP or CPIM) of a local presentity, served by the presence agent.
    Local,
    /// A CPIM watcher of a SIP presentity: the gateway is the subscriber (seed §7.2).
    CpimToSip,
    /// A SIP watcher of a CPIM presentity: the gateway is the notifier (seed §7.1).
    SipToCpim,
}

impl SubscriptionKind {
    pub const ALL: [SubscriptionKind; 3] = [
        SubscriptionKind::Local,
        SubscriptionKind::CpimToSip,
        SubscriptionKind::SipToCpim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Local => "local",
            SubscriptionKind::CpimToSip => "cpim-to-sip",
            SubscriptionKind::SipToCpim => "sip-to-cpim",
        }
    }
}

/// A selection of subscriptions: every given field must match.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, utoipa::IntoParams)]
// The query string of `GET /admin/v1/subscriptions`: without this, utoipa
// documents the fields as path parameters (its default), and a client
// following the document never sends them.
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionFilter {
    pub kind: Option<SubscriptionKind>,
    /// The watcher's URI; compared as an address of record (scheme `sip:`/`pres:` alike).
    pub watcher: Option<String>,
    /// The presentity's URI, compared like `watcher`.
    pub target: Option<String>,
    /// At most this many (default 1000, at most 10000).
    // The largest value the query parser reads (found by schemathesis:
    // 1642378866051408621207552 is an integer too, and refused).
    #[param(maximum = 18446744073709551615_u64)]
    #[schema(maximum = 18446744073709551615_u64)]
    pub limit: Option<u64>,
}

impl SubscriptionFilter {
    pub const DEFAULT_LIMIT: usize = 1000;
    pub const MAX_LIMIT: usize = 10_000;

    pub fn limit(&self) -> usize {
        self.limit
            .map_or(Self::DEFAULT_LIMIT, |l| {
                usize::try_from(l).unwrap_or(usize::MAX)
            })
            .min(Self::MAX_LIMIT)
    }
}

/// A URI given by an operator or held in a record, in the form filters
/// compare: the address of record with the `sip:` scheme (so `pres:` and
/// `sip:` name the same presentity, seed §4), else as written.
pub fn comparable(uri: &str) -> String {
    match crate::sip::Uri::parse_str(uri) {
        Ok(u) => {
            let mut a = u.with_scheme(crate::sip::Scheme::Sip).aor();
            a.port = None;
            a.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

/// A [`SubscriptionFilter`] with its URIs normalised once.
pub struct Selector {
    kind: Option<SubscriptionKind>,
    watcher: Option<String>,
    target: Option<String>,
    limit: usize,
}

impl SubscriptionFilter {
    pub fn selector(&self) -> Selector {
        Selector {
            kind: self.kind,
            watcher: self.watcher.as_deref().map(comparable),
            target: self.target.as_deref().map(comparable),
            limit: self.limit(),
        }
    }
}

impl Selector {
    /// Whether nothing of `kind` can match (the caller need not look).
    pub fn excludes(&self, kind: SubscriptionKind) -> bool {
        self.kind.is_some_and(|k| k != kind)
    }

    /// Whether a subscription of `kind` from `watcher` to `target` matches.
    pub fn admits(&self, kind: SubscriptionKind, watcher: &str, target: &str) -> bool {
        !self.excludes(kind)
            && self
                .watcher
                .as_ref()
                .is_none_or(|w| comparable(watcher) == *w)
            && self
                .target
                .as_ref()
                .is_none_or(|t| comparable(target) == *t)
    }

    /// How many to collect: one more than the limit, so the caller can
    /// tell that the list was cut.
    pub fn take(&self) -> usize {
        self.limit.saturating_add(1)
    }
}

/// One subscription as an operator sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The key of `/admin/v1/dialogs/{id}`: `Call-ID;local-tag;remote-tag`
    /// (`cpim;watcher;target` for a CPIM watcher served without a SIP dialog).
    pub id: String,
    pub kind: SubscriptionKind,
    pub watcher: String,
    pub target: String,
    /// The event package (`presence`, `presence.winfo`).
    pub event: String,
    /// `active`, `pending` (RFC 6665 §4.1.3), or `establishing` for a
    /// gateway SUBSCRIBE still waiting for its final response.
    pub state: String,
    /// Politely blocked (OMA 2.5): active but only ever the neutral document.
    pub polite_block: bool,
    /// When the subscription expires, UNIX milliseconds.
    pub expires_at_ms: i64,
    pub expires_in_s: i64,
    /// Notifications go to the CPIM adapter, not into a SIP dialog.
    pub via_adapter: bool,
    /// A NOTIFY is waiting for its final response (at most one in flight, RFC 6665 §4.2.2).
    pub notify_in_flight: bool,
    /// A change waits for the NOTIFY in flight or for the throttle interval.
    pub notify_pending: bool,
    /// Held back by the RFC 3856 §6.10 rate limit.
    pub throttled: bool,
    /// When the last NOTIFY was generated (UNIX ms); absent if none since start.
    pub last_notify_at_ms: Option<i64>,
}

/// The SIP dialog of a subscription (RFC 3261 §12): what the next request
/// in it will carry (Call-ID, tags, URIs, remote target, route set, CSeq
/// both ways).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DialogView {
    pub subscription: SubscriptionView,
    #[serde(flatten)]
    pub dialog: crate::dialog::DialogFields,
    /// The CPIM transID (seed §7.1/§7.2), for dialogs with a CPIM side.
    pub trans_id: Option<String>,
}

impl DialogView {
    pub fn new(
        subscription: SubscriptionView,
        d: &crate::dialog::Dialog,
        trans_id: Option<String>,
    ) -> DialogView {
        DialogView {
            subscription,
            dialog: d.into(),
            trans_id,
        }
    }
}

/// A local presentity in the list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PresentitySummary {
    /// `pres:` URI (RFC 3856 §6.2 entity).
    pub entity: String,
    /// The address-of-record key (`sip:user@host`).
    pub aor: String,
    pub registrations: usize,
    pub publications: usize,
    pub watchers: usize,
    pub winfo_subscribers: usize,
}

/// One registered contact (RFC 3261 §10.3) and the presence it yields.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegistrationView {
    pub contact: String,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at_ms: i64,
    pub expires_in_s: i64,
    pub q: Option<f32>,
    /// `description="…"`: the note of the tuple this binding yields.
    pub description: Option<String>,
    pub methods: Option<String>,
    /// Registered with `methods="SUBSCRIBE"` (seed §10.2).
    pub handles_subscriptions: bool,
}

/// One publication (RFC 3903 event state).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicationView {
    /// The SIP-ETag.
    pub etag: String,
    pub publisher: String,
    pub content_type: String,
    pub expires_at_ms: i64,
    pub expires_in_s: i64,
    pub modified_at_ms: i64,
    /// The document as published.
    pub body: String,
}

/// Everything about one local presentity. (Not the summary flattened: its
/// `registrations` and `publications` counts would clash with the lists
/// here and put each key twice in one JSON object.)
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PresentityView {
    /// `pres:` URI (RFC 3856 §6.2 entity).
    pub entity: String,
    /// The address-of-record key (`sip:user@host`).
    pub aor: String,
    pub watchers: usize,
    pub winfo_subscribers: usize,
    /// The composed document (PIDF), what an allowed watcher gets.
    pub document: String,
    pub registrations: Vec<RegistrationView>,
    pub publications: Vec<PublicationView>,
    /// Subscriptions to it (presence and watcher-info).
    pub subscriptions: Vec<SubscriptionView>,
}

/// Seconds from `now_ms` until `at_ms` (negative once past).
pub fn seconds_until(at_ms: i64, now_ms: i64) -> i64 {
    (at_ms - now_ms).div_euclid(1000)
}
