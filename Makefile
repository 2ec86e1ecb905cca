# orchestratord. `make help` lists the targets.

GO        ?= go
BIN       := bin/orchestratord
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 10s
BENCHTIME ?= 1s
PKGS      := ./...

CLIENT    := web/client

.PHONY: help build run test test-client test-scale test-short check-fmt check-generate vet lint generate fuzz bench chaos soak load-build bench-report load-scale load-scale-1m bench-positions bench-abba bench-vet clean

help: ## show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/orchestratord
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./daemon/cmd/orchestratord

run: build ## serve the embedded demo config (memory store, echo route, :8080, admin on 127.0.0.1:9090)
	./$(BIN) serve --config demo

test: check-fmt vet check-generate test-client ## gofmt check, go vet, templ freshness, the JS client's checks and tests, then every Go test with -race
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

test-client: ## the JS client (web/client): tsc type check, .d.ts freshness, size budget, node --test against the real daemon
	@test -d $(CLIENT)/node_modules || (cd $(CLIENT) && npm ci --no-audit --no-fund --silent)
	cd $(CLIENT) && node scripts/check.mjs
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	CGO_ENABLED=0 $(GO) build -o $$tmp/orchestratord ./daemon/cmd/orchestratord && \
	cd $(CLIENT) && ORCH_BIN=$$tmp/orchestratord node --test --test-concurrency=1 test/*.test.mjs

test-scale: ## only the Redis Cluster / Sentinel / NATS-bus tests (a subset of make test; starts redis-server on ports 34100-34599)
	$(GO) test -race -count=1 -timeout 15m -run 'Cluster|Sentinel|ACL|TLS|Replicas|StoreFailover|Scale' ./daemon/sessions/ ./daemon/cmd/orchestratord/ ./daemon/config/

test-short: ## the tests without -race (faster while developing)
	$(GO) test -count=1 -short $(PKGS)

check-fmt: ## fail when gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_templ.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet (and of the benchmark-only build of make bench-positions, so that it keeps compiling)
	$(GO) vet $(PKGS)
	$(GO) vet -tags benchnolog ./daemon/sessions/ ./daemon/cmd/orchestratord/

check-generate: ## fail when the generated templ files are stale
	@$(GO) tool templ generate >/dev/null
	@git diff --exit-code -- '*_templ.go' || { echo "generated templ files are stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- '*_templ.go')" || { echo "uncommitted generated templ files"; exit 1; }

generate: ## regenerate the templ views
	$(GO) tool templ generate

lint: check-fmt vet ## gofmt and go vet

fuzz: ## run every fuzz target for FUZZTIME (default 10s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

bench: ## run the benchmarks (-benchmem, BENCHTIME each)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

chaos: ## the long chaos suite (500 in flight, 1,000 vanishing clients, 10k slow-loris, ...); the short form runs in make test
	CHAOS_LONG=1 $(GO) test -count=1 -run . -timeout 30m ./daemon/chaos
	CHAOS_LONG=1 $(GO) test -count=1 -v -run TestSlowConsumersResume -timeout 30m ./daemon/cmd/orchestratord

soak: ## a 10-minute bounded soak with faults on a schedule: prints sent, received, missing, duplicates, memory
	CHAOS_LONG=1 CHAOS_SOAK=10m $(GO) test -count=1 -v -run TestSoak -timeout 20m ./daemon/chaos

load-build: ## build bin/orchestratord-load (the event-driven load tool)
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/orchestratord-load ./daemon/cmd/orchestratord-load

bench-report: ## side by side with gorilla/gws/nbio; rewrites docs/benchmarks.md's generated section and docs/img/bench-*.png (BENCH_DURATION=3s BENCH_IDLE_DURATION=3s: short)
	bench/run.sh

load-scale: ## hold SCALE_CONNS (default 100000) idle connections over SO_REUSEPORT daemons; rewrites the scale section (settings: bench/scale.sh's header)
	bench/scale.sh

load-scale-1m: ## 1,000,000 idle sessions on one 2-core host: 120 s heartbeat, paced at 2500 handshakes/s, 55 daemons and 53 client processes (~12 min; docs/benchmarks.md)
	SCALE_CONNS=1000000 SCALE_HEARTBEAT=120s SCALE_HOLD=120s SCALE_CONNECT_RATE=2500 SCALE_DIALERS=8 \
	  SCALE_PER_DAEMON=18500 SCALE_PER_CLIENT=19000 bench/scale.sh

bench-positions: ## what positions and the replay log cost on the echo path: product vs a -tags benchnolog build, ABAB pairs (POS_PAIRS=3 POS_DURATION=10s POS_PORT_BASE=28000)
	bench/positions.sh

bench-abba: ## independent check against gws: ABBA pairs at 1k connections with a gorilla/websocket client (netpoll-echo and the daemon vs gws-echo); prints markdown tables (ABBA_BLOCKS, ABBA_DURATION)
	bench/abba.sh

bench-vet: ## vet, build and test the separate bench/ module
	cd bench && $(GO) vet ./... && $(GO) build ./... && $(GO) test ./...

clean: ## remove build output
	rm -rf bin
