-- Prosody for compose.yaml (docs/xmpp.md): XMPP users on xmpp.example.org,
-- the SIP domain example.com served by xmpp-adapter as an XEP-0114
-- component. Add users with:
--   docker compose exec prosody prosodyctl register alice xmpp.example.org PASSWORD
admins = { }
modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "presence";
    "carbons"; "pep"; "private"; "vcard_legacy"; "register";
}
allow_registration = false
daemonize = false
pidfile = "/var/run/prosody/prosody.pid"
log = { { levels = { min = "info" }, to = "console" } }
interfaces = { "*" }
component_interfaces = { "*" }   -- the compose network only (not published)
c2s_require_encryption = false   -- set true with a certificate for xmpp.example.org
authentication = "internal_hashed"
storage = "internal"

VirtualHost "xmpp.example.org"

-- The SIP domain: stanzas to bob@example.com go to the adapter.
Component "example.com"
    component_secret = "change-me-component-secret"
