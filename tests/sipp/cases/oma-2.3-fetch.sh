# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.3 (seed 004, PS-1.0-int-M-0120; protocol-notes
# §5.3): a fetch, SUBSCRIBE with Expires 0.
# transports: udp tcp
#
#   admin    PUT /admin/v1/publishers/sip:dave@example.com/sip:source@example.com
#            -> 200 (issue 14: a third-party source needs a publisher grant)
#   source   PUBLISH for dave, t-fetch open -> 200
#   fetcher  SUBSCRIBE Expires 0 -> 200 Expires 0 -> one NOTIFY
#            terminated;reason=timeout with t-fetch open
#   source   PUBLISH for dave, t-fetch closed (newer) -> 200; the fetcher,
#            still listening for 3 s, must get no NOTIFY (nothing was kept)
start_gateway_with

pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user dave -key pub_expires 3600 -key pua source -key tuple_id t-fetch)
put_publisher sip:dave@example.com sip:source@example.com
sipp_run source publish "${pidf[@]}" -key basic open -key ts 2005-02-07T11:00:00Z
sipp_start fetcher oma-2.3-fetch
sipp_wait_log fetcher '^fetched$'
sipp_run change publish "${pidf[@]}" -key basic closed -key ts 2005-02-07T11:05:00Z
sipp_wait fetcher
