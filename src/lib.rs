//! sip-cpim-gateway: a SIP ↔ CPIM presence interworking gateway with an
//! internal presence agent. See `docs/architecture.md` for the module map.

pub mod config;
pub mod lint;
pub mod server;
pub mod sip;
pub mod transaction;
pub mod transport;
