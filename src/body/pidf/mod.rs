//! Presence documents: PIDF (RFC 3863), its pre-RFC name cpim-pidf
//! (draft-ietf-impp-cpim-pidf-05/-07) and the legacy XPIDF, plus Accept
//! negotiation (RFC 3261 §20.1, RFC 3856 §6.5/§7.1).
//!
//! One model for all three formats ([`PresenceDoc`]), read and written by
//! per-format code. The files, bottom up:
//! - `model.rs`: the document types (RFC 3863 §4.1) and how unknown
//!   elements are kept ([`XmlFragment`]);
//! - `parse.rs`: reading PIDF and cpim-pidf;
//! - `render.rs`: writing PIDF and cpim-pidf;
//! - `xpidf.rs`: reading and writing XPIDF (no specification: the decisions
//!   are documented there);
//! - `format.rs`: [`PresenceFormat`] (media type, namespace) and the choice
//!   of reader/writer per format ([`PresenceDoc::parse`],
//!   [`PresenceDoc::render`], the lenient reader behind
//!   [`super::presence_of`]);
//! - `accept.rs`: [`negotiate`], the format to send given an Accept header.
//!
//! # cpim-pidf
//! Same shape, namespace `urn:ietf:params:xml:ns:cpim-pidf`, any prefix (the
//! old drafts wrote `impp:`). [`PresenceDoc::parse`] is strict about the
//! namespace ([`BodyError::WrongNamespace`](super::BodyError::WrongNamespace));
//! [`super::presence_of`] is the lenient entry point that falls back to the
//! format the content really has.
//!
//! # Entities
//! Only the predefined entities and character references are resolved; any
//! other entity reference (even one declared in an internal DTD subset) makes
//! the document not well-formed. No entity is ever expanded from a DTD.

mod accept;
mod format;
mod model;
mod parse;
mod render;
mod xpidf;

pub use accept::negotiate;
pub(crate) use format::parse_lenient;
pub use format::{CPIM_PIDF_NS, PIDF_NS, PresenceFormat};
pub use model::{Basic, Contact, Note, PresenceDoc, Tuple, XmlFragment};
pub use xpidf::XPIDF_DOCTYPE;

/// Documents and helpers the tests of the submodules share.
#[cfg(test)]
pub(crate) mod tests {
    use super::{PresenceDoc, PresenceFormat};
    use crate::body::BodyError;

    pub(crate) fn fixture_body(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/seed-flows/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let pos = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("blank line");
        raw[pos + 4..].to_vec()
    }

    /// RFC 3863 §6 example (two tuples, status extensions, notes, xml:lang).
    pub(crate) const RFC3863_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:im="urn:ietf:params:xml:ns:pidf:im"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <im:im>busy</im:im>
      <myex:location>home</myex:location>
    </status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2001-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
</presence>
"#;

    /// RPID (RFC 4480) + data model (RFC 4479) extended PIDF.
    pub(crate) const RPID_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:caps="urn:ietf:params:xml:ns:pidf:caps"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
    </status>
    <rpid:activities>
      <rpid:on-the-phone/>
    </rpid:activities>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <timestamp>2005-05-30T22:00:29Z</timestamp>
  </tuple>
  <dm:person id="p1">
    <rpid:activities rpid:until="2005-05-30T23:00:00Z">
      <rpid:on-the-phone/>
      <!-- comments are dropped -->
    </rpid:activities>
    <rpid:class>calendar</rpid:class>
    <rpid:mood><rpid:other xml:lang="en">a &amp; b &lt;c&gt;</rpid:other></rpid:mood>
    <dm:note>Scoring 120</dm:note>
    <caps:extra xsi:type="caps:T"/>
    <dm:timestamp>2005-05-30T22:02:44+02:00</dm:timestamp>
  </dm:person>
  <dm:device id="pc122">
    <rpid:user-input>idle</rpid:user-input>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
  </dm:device>
</presence>
"#;

    pub(crate) const XPIDF_DEPLOYED: &str = r#"<?xml version="1.0"?>
<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">
<presence>
  <presentity uri="sip:user@example.com;method=SUBSCRIBE"/>
  <atom id="1000">
    <address uri="sip:user@host;user=ip" priority="0.800000">
      <status status="open"/>
      <msnsubstatus substatus="online"/>
    </address>
  </atom>
  <atom atomid="2000">
    <address uri="sip:a@desk"><status status="inuse"/><msnsubstatus substatus="onthephone"/></address>
    <address uri="sip:a@mobile" priority="banana"><status status="inactive"/><note>gone</note></address>
  </atom>
  <atom>
    <address uri="sip:a@x"><status status="closed"/></address>
  </atom>
</presence>
"#;

    pub(crate) fn pidf(body: &str) -> Result<PresenceDoc, BodyError> {
        PresenceDoc::parse(body.as_bytes(), PresenceFormat::Pidf)
    }

    pub(crate) fn assert_round_trips(doc: &PresenceDoc) {
        for f in [PresenceFormat::Pidf, PresenceFormat::CpimPidf] {
            let text = doc.render(f);
            let back = PresenceDoc::parse(text.as_bytes(), f)
                .unwrap_or_else(|e| panic!("{f:?}: {e}\n{text}"));
            assert_eq!(&back, doc, "{f:?} round trip\n{text}");
            assert_eq!(back.render(f), text, "{f:?} render is stable");
        }
    }
}
