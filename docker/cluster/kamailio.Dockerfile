# Kamailio for docker/cluster/compose.yaml: Debian bookworm's kamailio
# package (5.6, the version tests/cluster/dispatcher.sh runs the same
# kamailio.cfg with). The configuration and the dispatcher list are
# mounted by compose.yaml; what differs per deployment (the advertised
# address) is passed with -A (the command in compose.yaml).
FROM debian:bookworm-slim

# The core package has every module kamailio.cfg loads (tm, rr, sl,
# dispatcher, sanity, ...). Kamailio refuses to start without a runtime
# directory it can write (-Y, default /run/kamailio), which outside
# systemd nobody creates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends kamailio \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o kamailio -g kamailio -m 0750 /run/kamailio

# The package's user; 5060 is not a privileged port.
USER kamailio

EXPOSE 5060/udp

# -DD: no daemon, children forked (the main process stays the container's
# PID 1 and stops them on SIGTERM); -E: log to stderr (docker logs).
ENTRYPOINT ["kamailio", "-DD", "-E", "-f", "/etc/kamailio/kamailio.cfg"]
CMD []
