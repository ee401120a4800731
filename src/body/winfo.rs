//! Watcher information documents (RFC 3858, `application/watcherinfo+xml`)
//! for the `presence.winfo` template package (RFC 3857). Rendering only,
//! plus a small reader for tests and tools.

use super::xml::{escape_attr, escape_text};

pub const CONTENT_TYPE: &str = "application/watcherinfo+xml";
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:watcherinfo";

/// A watcher's subscription status (RFC 3857 §3.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherStatus {
    Pending,
    Active,
    Waiting,
    Terminated,
}

impl WatcherStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherStatus::Pending => "pending",
            WatcherStatus::Active => "active",
            WatcherStatus::Waiting => "waiting",
            WatcherStatus::Terminated => "terminated",
        }
    }
}

/// What changed the status (RFC 3857 §3.4.2): `subscribe`, `approved`,
/// `deactivated`, `probation`, `rejected`, `timeout`, `giveup`,
/// `noresource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEntry {
    /// Stable per subscription.
    pub id: String,
    pub status: WatcherStatus,
    pub event: &'static str,
    /// The watcher's URI.
    pub uri: String,
    pub duration_subscribed: Option<u32>,
}

/// One watcherinfo document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherInfo {
    pub version: u32,
    /// `full` state, or `partial` (only what changed).
    pub full: bool,
    /// The watched resource (the presentity).
    pub resource: String,
    pub package: String,
    pub watchers: Vec<WatcherEntry>,
}

impl WatcherInfo {
    /// The RFC 3858 §4 document.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(256 + self.watchers.len() * 160);
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n");
        s.push_str(&format!(
            "<watcherinfo xmlns=\"{NAMESPACE}\" version=\"{}\" state=\"{}\">\r\n",
            self.version,
            if self.full { "full" } else { "partial" }
        ));
        s.push_str("  <watcher-list resource=\"");
        escape_attr(&self.resource, &mut s);
        s.push_str("\" package=\"");
        escape_attr(&self.package, &mut s);
        s.push_str("\">\r\n");
        for w in &self.watchers {
            s.push_str("    <watcher id=\"");
            escape_attr(&w.id, &mut s);
            s.push_str(&format!(
                "\" status=\"{}\" event=\"{}\"",
                w.status.as_str(),
                w.event
            ));
            if let Some(d) = w.duration_subscribed {
                s.push_str(&format!(" duration-subscribed=\"{d}\""));
            }
            s.push('>');
            escape_text(&w.uri, &mut s);
            s.push_str("</watcher>\r\n");
        }
        s.push_str("  </watcher-list>\r\n</watcherinfo>\r\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3858_shape() {
        let w = WatcherInfo {
            version: 2,
            full: false,
            resource: "sip:professor@example.net".into(),
            package: "presence".into(),
            watchers: vec![WatcherEntry {
                id: "8ajksjda7s".into(),
                status: WatcherStatus::Active,
                event: "approved",
                uri: "sip:userA@example.net".into(),
                duration_subscribed: Some(509),
            }],
        };
        let doc = w.render();
        assert!(doc.contains("<watcherinfo xmlns=\"urn:ietf:params:xml:ns:watcherinfo\" version=\"2\" state=\"partial\">"));
        assert!(doc.contains(
            "<watcher-list resource=\"sip:professor@example.net\" package=\"presence\">"
        ));
        assert!(doc.contains("<watcher id=\"8ajksjda7s\" status=\"active\" event=\"approved\" duration-subscribed=\"509\">sip:userA@example.net</watcher>"));
        // Well-formed: the PIDF reader's XML layer accepts it.
        assert!(roxmltree_like_well_formed(&doc));
    }

    fn roxmltree_like_well_formed(doc: &str) -> bool {
        let mut r = quick_xml::Reader::from_str(doc);
        let mut depth = 0i32;
        loop {
            match r.read_event() {
                Ok(quick_xml::events::Event::Start(_)) => depth += 1,
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Eof) => return depth == 0,
                Err(_) => return false,
                _ => {}
            }
        }
    }
}
