# Prosody (Debian package) for compose.yaml; config docker/prosody.cfg.lua.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends prosody ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o prosody -g prosody /var/run/prosody
COPY xmpp-adapter/docker/prosody.cfg.lua /etc/prosody/prosody.cfg.lua
USER prosody
EXPOSE 5222/tcp 5347/tcp
CMD ["prosody", "-F"]
