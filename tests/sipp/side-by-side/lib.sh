# shellcheck shell=bash
# Shared by run.sh, ab.sh and overload.sh: the gateway's configuration for
# the side-by-side scenarios (every 2xx durable; the same presence settings
# as the Kamailio side: allow, no throttling, 200 to SUBSCRIBE).

# gateway_toml FILE SIP_PORT HTTP_PORT STORE_DIR; GATEWAY_TOML_EXTRA (env) is
# appended: a setting to try, e.g. $'[sip.overload]\nmax_queue_delay_ms = 150'.
gateway_toml() {
	cat > "$1" <<TOML
[sip]
listen = ["udp:127.0.0.1:$2"]
local_domains = ["example.com"]
[cpim]
listen = "127.0.0.1:$3"
[presence]
default_policy = "allow"
notify_min_interval_ms = 0
subscribe_success_code = 200
max_expires = 3600
[store]
path = "$4"
[log]
level = "warn"
${GATEWAY_TOML_EXTRA:-}
TOML
}
