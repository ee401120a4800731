# shellcheck shell=bash
# Watcher information full state after a reactive authorization (RFC 3857
# §3.4.1, RFC 3858 §5): a watcher that was pending and then approved shows
# event="approved" in a full-state document, not "subscribe".
# transports: udp tcp
#
#   source   PUBLISH for grace, t-winfo open -> 200
#   watcher  SUBSCRIBE grace (default confirm) -> 202 -> NOTIFY pending
#   admin    PUT .../sip:grace@example.com/sip:watcher@example.com allow
#   watcher  NOTIFY active; stays 2 s
#   grace    SUBSCRIBE Event presence.winfo -> 200 -> full state: watcher
#            active, event approved; unsubscribe -> terminated, same
#   watcher  unsubscribe -> terminated
start_gateway_with 'presence.default_policy="confirm"'

sipp_run source publish -key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf \
    -key pres_user grace -key pub_expires 3600 -key pua grace -key tuple_id t-winfo \
    -key basic open -key ts 2005-02-07T15:00:00Z
sipp_start watcher winfo-watcher
sipp_wait_log watcher '^pending$'
put_policy sip:grace@example.com sip:watcher@example.com allow
sipp_wait_log watcher '^active$'
sipp_run grace winfo-owner-full
! grep -q '^unsub$' "$WORK/watcher.log" ||
    fail "the watcher unsubscribed before grace's winfo subscription ended (machine too slow?)"
sipp_wait watcher
