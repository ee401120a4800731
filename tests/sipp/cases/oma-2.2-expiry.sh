# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.2 (seed 004, PS-1.0-int-M-0110; protocol-notes
# §5.2): a publication lapses without refresh; the watcher is notified of
# the document without it and its subscription stays active.
# transports: udp tcp
#
#   admin     PUT /admin/v1/publishers/sip:bob@example.com/sip:source-{a,b}@example.com
#             -> 200 (issue 14: third-party sources need a publisher grant)
#   source-a  PUBLISH for bob, t-long, Expires 3600 -> 200
#   watcher   SUBSCRIBE bob -> 200 -> NOTIFY with t-long
#   source-b  PUBLISH for bob, t-short, Expires 2 (min_expires = 1) -> 200, Expires <= 2
#   watcher   NOTIFY with both; then, 2 s later and with nothing sent in
#             between, NOTIFY active without t-short (checked: elapsed >= 1.5 s)
#   stale     PUBLISH SIP-If-Match: source-b's expired tag -> 412 (RFC 3903 §6 step 3)
#   watcher   unsubscribe -> terminated
start_gateway_with presence.min_expires=1

pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user bob)
put_publisher sip:bob@example.com sip:source-a@example.com
put_publisher sip:bob@example.com sip:source-b@example.com
sipp_run source-a publish "${pidf[@]}" -key pub_expires 3600 -key pua source-a \
    -key tuple_id t-long -key basic open -key ts 2005-02-07T10:00:00Z
sipp_start watcher oma-2.2-watcher
sipp_wait_log watcher '^n1$'
sipp_run source-b publish "${pidf[@]}" -key pub_expires 2 -key pua source-b \
    -key tuple_id t-short -key basic open -key ts 2005-02-07T10:01:00Z
published=$(date +%s.%N)
expect_le "source-b: granted Expires" "$(sipp_log_value source-b expires)" 2
sipp_wait_log watcher '^n2$'
sipp_wait_log watcher '^n3$' 10
elapsed=$(awk -v a="$published" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
awk -v e="$elapsed" 'BEGIN { exit !(e >= 1.5) }' ||
    fail "the NOTIFY without t-short came ${elapsed} s after the 2 s publication: too early"
step "ok: t-short left the document ${elapsed} s after it was published for 2 s"
sipp_run stale publish-412 -key pres_user bob -key pua source-b \
    -key etag "$(sipp_log_value source-b etag)"
sipp_wait watcher
