# tailgate — an MCP gateway that is its own tailnet node.

GO       ?= go
BIN      ?= bin
CONFIG   ?= configs/dev.yaml
TIMEOUT  ?= 600s
# Nothing tailgate starts from here uploads logs to Tailscale.
export TS_NO_LOGS_NO_SUPPORT := true
export GOTOOLCHAIN := local

.PHONY: all build test vet fmt-check unit integration run clean

all: build

build:
	$(GO) build -o $(BIN)/tailgate ./cmd/tailgate
	$(GO) build -o $(BIN)/tailgate-demo-server ./cmd/tailgate-demo-server

## test: formatting, vet, unit and integration tests (what CI runs).
test: fmt-check vet
	$(GO) test -timeout $(TIMEOUT) ./...

unit:
	$(GO) test -timeout $(TIMEOUT) ./policy/... ./gateway/... ./mcpstdio/... ./tsnode/...

integration:
	$(GO) test -timeout $(TIMEOUT) ./integration/...

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## run: run the gateway with CONFIG (default configs/dev.yaml).
run: build
	$(BIN)/tailgate -f $(CONFIG)

clean:
	rm -rf $(BIN)
