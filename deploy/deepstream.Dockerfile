# deepstream 7 with swarm's plugin in supervised mode: one container per deepstream server, the swarm node
# running inside it as deepstream's child (integrations/deepstream/README.md). Built from the repository's
# root by deploy/compose.yml, or:
#
#   docker build -f deploy/deepstream.Dockerfile -t swarm-deepstream .
#
# deepstream's config is deploy/deepstream.yml (/etc/deepstream/config.yml), filled from the environment:
# DEEPSTREAM_SERVER_NAME, SWARM_ADVERTISE_HOST (the name the other containers reach this one at) and
# SWARM_SEEDS (the other servers' swarm nodes, "host:port, host:port").
FROM node:20-bookworm-slim

# Debian bookworm's Python is 3.11, the oldest swarm supports
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/swarm/
COPY swarm /src/swarm/swarm
RUN python3 -m venv /opt/swarm \
    && /opt/swarm/bin/pip install --no-cache-dir --disable-pip-version-check /src/swarm \
    && rm -rf /src/swarm

# deepstream itself. Its uWebSockets.js dependency comes from a git host, not the npm registry; it is
# loaded only for `httpServer.type: uws`, so an empty package stands in for it (docs/deepstream.md)
WORKDIR /opt/deepstream
COPY deploy/deepstream-package.json package.json
RUN mkdir empty-uws \
    && echo '{"name": "uWebSockets.js", "version": "0.0.0-empty", "main": "index.js"}' > empty-uws/package.json \
    && touch empty-uws/index.js \
    && npm install --omit=dev --no-audit --no-fund \
    && npm cache clean --force

# the plugin uses Node built-ins only: copied, not installed
COPY integrations/deepstream /opt/swarm-clusternode
COPY deploy/deepstream.yml /etc/deepstream/config.yml

# the image's own unprivileged user; the plugin's private directory goes to /tmp
USER node
# deepstream's websocket (6020) and swarm's port (6021)
EXPOSE 6020 6021
# SIGINT is deepstream's graceful stop: it closes the plugin, which stops the swarm node
STOPSIGNAL SIGINT
CMD ["/opt/deepstream/node_modules/.bin/deepstream", "start", "-c", "/etc/deepstream/config.yml"]
