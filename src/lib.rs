//! sip-cpim-gateway: a SIP ↔ CPIM presence interworking gateway with an
//! internal presence agent. See `docs/architecture.md` for the module map.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod body;
pub mod cluster;
pub mod config;
pub mod cpim;
pub mod delivery;
pub mod dialog;
pub mod dialog_table;
pub mod durable;
pub mod gateway;
pub mod http;
pub mod lint;
pub mod maps;
pub mod metrics;
pub mod presence;
pub mod recovery;
pub mod reject;
pub mod router;
pub mod server;
pub mod sip;
pub mod store;
pub mod transaction;
pub mod transport;
