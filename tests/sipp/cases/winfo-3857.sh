# shellcheck shell=bash
# Watcher information (RFC 3857 presence.winfo, RFC 3858
# application/watcherinfo+xml; protocol-notes §3.5) with reactive
# authorization (OMA flow 2.6): the presentity grace follows her watchers
# while one is pending, approved through the admin API, and gone.
# transports: udp tcp
#
#   source   PUBLISH for grace, t-winfo open -> 200
#   admin    PUT .../sip:grace@example.com/sip:amy@example.com allow
#   amy      SUBSCRIBE grace -> 200 -> NOTIFY active, t-winfo
#   mallory  SUBSCRIBE grace Event presence.winfo -> 403 (RFC 3857 §5.1:
#            only the presentity sees its watchers), no NOTIFY
#   amy      the same: an allow rule for grace's presence is not one for her
#            watcher information -> 403
#   grace    SUBSCRIBE grace Event presence.winfo (From = grace's AOR) -> 200
#            -> w0 full state, version 0: amy active
#   watcher  SUBSCRIBE grace -> 202 -> NOTIFY pending, neutral
#   grace    w1 partial, version 1: watcher pending, event subscribe
#   admin    PUT .../sip:watcher@example.com allow -> 200
#   watcher  NOTIFY active, t-winfo open (same dialog)
#   grace    w2 partial, version 2: watcher active, event approved
#   admin    PUT .../sip:amy@example.com block -> amy terminated;reason=rejected
#   grace    w3 partial, version 3: amy terminated, event rejected
#   watcher  unsubscribe -> terminated
#   grace    w4 partial, version 4: watcher terminated, event timeout;
#            unsubscribe -> terminated, full state version 5, no watchers
start_gateway_with 'presence.default_policy="confirm"'

sipp_run source publish -key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf \
    -key pres_user grace -key pub_expires 3600 -key pua grace -key tuple_id t-winfo \
    -key basic open -key ts 2005-02-07T15:00:00Z
put_policy sip:grace@example.com sip:amy@example.com allow
sipp_start amy winfo-amy
sipp_wait_log amy '^a1$'

winfo_keys=(-key pres_user grace -key event presence.winfo -key accept application/watcherinfo+xml)
sipp_run mallory subscribe-403 "${winfo_keys[@]}" -key sub_user mallory
sipp_run amy-winfo subscribe-403 "${winfo_keys[@]}" -key sub_user amy

sipp_start grace winfo-owner
sipp_wait_log grace '^w0$'
sipp_start watcher winfo-watcher
sipp_wait_log watcher '^pending$'
sipp_wait_log grace '^w1$'
put_policy sip:grace@example.com sip:watcher@example.com allow
sipp_wait_log watcher '^active$'
sipp_wait_log grace '^w2$'
put_policy sip:grace@example.com sip:amy@example.com block
sipp_wait_log amy '^rejected$'
sipp_wait_log grace '^w3$'
! grep -q '^unsub$' "$WORK/watcher.log" ||
    fail "the watcher unsubscribed before grace saw amy rejected (machine too slow?)"
step "ok: w3 (amy rejected) came before the watcher left"
sipp_wait amy watcher grace
