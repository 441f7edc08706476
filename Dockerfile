# syntax=docker/dockerfile:1
#
# tailgate in a container: a static binary, and Node.js so that `npx`
# MCP servers (the seed config's server-everything) can run beside it.
#
#   make docker                     # or: docker build -t tailgate .
#   docker run -d --name tailgate \
#     -v tailgate-state:/var/lib/tailgate \
#     -v $PWD/tailgate.yaml:/etc/tailgate/tailgate.yaml:ro \
#     -e TS_AUTHKEY=tskey-auth-... tailgate
#
# The config should set `tailscale.stateDir: /var/lib/tailgate` (or
# `ephemeral: true` and `stateStore: mem`). tailgate listens on the tailnet
# only, through its own userspace WireGuard: no port needs publishing, no
# capability, no /dev/net/tun.

ARG GO_VERSION=1.26.8
ARG NODE_VERSION=22

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN go build -trimpath -tags ts_omit_peerapiserver,ts_omit_tpm,grpcnotrace \
      -ldflags "-s -w -X github.com/tailgate-dev/tailgate/gateway.Version=${VERSION} -X github.com/tailgate-dev/tailgate/gateway.Commit=${COMMIT}" \
      -o /out/tailgate ./cmd/tailgate

FROM node:${NODE_VERSION}-bookworm-slim
# tini as PID 1: each stdio child's guard (and what a child leaves behind)
# is reparented to PID 1 when it exits, and must be reaped there.
# ca-certificates: the slim image has no system roots, and tailgate (a Go
# binary) verifies a remote https target's, setec's and OTLP's
# certificates against them.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tailgate /usr/local/bin/tailgate
RUN mkdir -p /var/lib/tailgate /etc/tailgate && chown node:node /var/lib/tailgate && chmod 0700 /var/lib/tailgate
# An unprivileged user; npx caches packages in its home.
USER node
ENV HOME=/home/node TS_NO_LOGS_NO_SUPPORT=true
VOLUME /var/lib/tailgate
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/tailgate"]
CMD ["-f", "/etc/tailgate/tailgate.yaml", "--log-format", "json"]
