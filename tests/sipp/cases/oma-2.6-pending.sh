# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.6 (seed 004, PS-1.0-int-M-0150; protocol-notes
# §5.6): reactive authorization. With the default policy "confirm", a
# watcher without a rule gets 202 and a pending NOTIFY with a neutral
# document; when the presentity's owner allows it through the admin API
# (PUT /admin/v1/policies/{presentity}/{watcher}) during the scenario, the
# next NOTIFY in the same dialog is active with the real document, no
# re-SUBSCRIBE needed.
# transports: udp tcp
#
#   source   PUBLISH for eve, t26 open -> 200 (real state != neutral: NOTE 2
#            cannot skip step 12)
#   admin    GET /admin/v1/policies/sip:eve@example.com: default confirm, no rule
#   watcher  step 1 SUBSCRIBE -> step 4 202 -> step 7 NOTIFY pending, neutral
#            -> step 9 200
#   admin    step 11 PUT .../sip:eve@example.com/sip:watcher@example.com
#            {"action":"allow"} -> 200, the rule echoed; GET lists it
#   watcher  step 12 NOTIFY active, t26 open, same dialog, higher CSeq ->
#            step 14 200; no other NOTIFY for 1 s; unsubscribe -> terminated
start_gateway_with 'presence.default_policy="confirm"'

# eve's own PUA publishes; a third party without a publisher grant is
# refused (RFC 3903 §6 step 4: the publisher must be authorized; no watch
# policy is a permission to publish, issue 14), and its tuple never reaches
# the document.
pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user eve -key pub_expires 3600)
sipp_run source publish "${pidf[@]}" -key pua eve -key tuple_id t26 \
    -key basic open -key ts 2005-02-07T11:00:00Z
sipp_run stranger publish-403 "${pidf[@]}" -key pua stranger -key tuple_id t26-stranger \
    -key basic open -key ts 2005-02-07T11:00:30Z

http_get /admin/v1/policies/sip:eve@example.com
expect_eq "GET policies status" "$HTTP_CODE" 200
json_expect "no decision yet for eve's watchers (default confirm)" \
    "d['presentity'] == 'sip:eve@example.com' and d['default'] == 'confirm' and d['rules'] == []"

sipp_start watcher oma-2.6-watcher
sipp_wait_log watcher '^pending$'
# Step 11: the presentity modifies its subscription authorization policy.
put_policy sip:eve@example.com sip:watcher@example.com allow
sipp_wait_log watcher '^active$'
http_get /admin/v1/policies/sip:eve@example.com
json_expect "the rule is stored" \
    "d['default'] == 'confirm' and d['rules'] == [{'watcher': 'sip:watcher@example.com', 'action': 'allow'}]"
sipp_wait watcher
