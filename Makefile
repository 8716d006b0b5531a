# Hotline: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /usr/bin/env bash
GO    ?= go
# Tests: each test package creates its own database on this server.
export HOTLINE_TEST_DATABASE_URL ?=
KEYRING ?= $(CURDIR)/.dev/keyring
LISTEN  ?= 127.0.0.1:7443
CONSOLE_LISTEN ?= 127.0.0.1:7444

.PHONY: all build test vet fmt-check run demo clean

all: build

build:
	$(GO) build ./...
	@$(MAKE) --no-print-directory agent-size

## test: every test against a real PostgreSQL (found or started by deploy/dev/ensure-postgres.sh)
test: fmt-check vet
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  export HOTLINE_CHROMIUM=$${HOTLINE_CHROMIUM:-$$(./deploy/dev/ensure-chromium.sh)} && \
	  echo "test database server: $$HOTLINE_TEST_DATABASE_URL" && \
	  $(GO) test -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory agent-test-smtp
	@$(MAKE) --no-print-directory agent-size

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## run: find or start PostgreSQL, migrate, create a dev keyring if none, serve on $(LISTEN)
run:
	@url=$$(./deploy/dev/ensure-postgres.sh hotline) && \
	  export DATABASE_URL=$$url HOTLINE_KEYRING=$${HOTLINE_KEYRING:-$(KEYRING)} && \
	  $(GO) build -o bin/hotline-server ./cmd/hotline-server && \
	  ./bin/hotline-server serve --dev --listen $(LISTEN) --console-listen $(CONSOLE_LISTEN)

## demo: the whole story, printed step by step
demo:
	./deploy/dev/demo.sh

clean:
	rm -rf bin .dev

# ---- the DVR agent ----
# Agent targets:
#
#   make agent-size   build cmd/dvr-agent static and stripped for the DVR
#                     targets and print each size (goal: armv7 <= 3.5 MB)
#   make agent-fuzz   run every agent fuzz target (and the audit checkpoint
#                     parser's) for FUZZTIME (default 20s)
#   make bench-agent  run the agent benchmarks (ratios as x-baseline)
#   make agent-test-smtp  the dvr-agent tests of the smtp build (-tags smtp)
#
# AGENT_BUILD_DATE sets the agent's build-date floor (the clock before it is
# "not set"); firmware builds pass their release date. AGENT_VERSION is what
# `dvr-agent version` prints.

GO               ?= go
FUZZTIME         ?= 20s
AGENT_OUT        ?= bin/agent
AGENT_VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
AGENT_BUILD_DATE ?=
AGENT_LDFLAGS    := -s -w -buildid= -X main.version=$(AGENT_VERSION) $(if $(AGENT_BUILD_DATE),-X github.com/dvrhotline/hotline/agent/verifier.BuildDate=$(AGENT_BUILD_DATE))

# The armv7 build's budget, in bytes (3.5 MB); make agent-size fails over it.
AGENT_MAX_BYTES  := 3500000

# name GOOS GOARCH extra-env
AGENT_TARGETS := \
	linux-armv7:linux:arm:GOARM=7 \
	linux-arm64:linux:arm64: \
	linux-mipsle-softfloat:linux:mipsle:GOMIPS=softfloat

# Fuzz targets as package:Name.
AGENT_FUZZ := \
	./agent/serial:FuzzParseSerial \
	./agent/clip:FuzzClip \
	./agent/voicecode:FuzzDecodeVoiceCode \
	./agent/voicecode:FuzzBoundCode \
	./agent/grant:FuzzVerifyGrant \
	./agent/grant:FuzzSignJSON \
	./agent/state:FuzzLoadState \
	./agent/verifier:FuzzVerifierInput \
	./agent/mailer:FuzzCheckSettings

.PHONY: agent-size agent-fuzz bench-agent agent-test-smtp

agent-size:
	@mkdir -p $(AGENT_OUT)
	@set -e; for t in $(AGENT_TARGETS); do \
		name=$${t%%:*}; rest=$${t#*:}; goos=$${rest%%:*}; rest=$${rest#*:}; goarch=$${rest%%:*}; extra=$${rest#*:}; \
		out=$(AGENT_OUT)/dvr-agent-$$name; \
		env CGO_ENABLED=0 GOOS=$$goos GOARCH=$$goarch $$extra \
			$(GO) build -trimpath -ldflags '$(AGENT_LDFLAGS)' -o $$out ./cmd/dvr-agent; \
		size=$$(wc -c < $$out | tr -d ' '); \
		awk -v n="$$name" -v s="$$size" 'BEGIN { printf "%-24s %9d bytes  %5.2f MB (%5.2f MiB)\n", n, s, s/1e6, s/1048576 }'; \
		if [ "$$name" = linux-armv7 ] && [ "$$size" -gt $(AGENT_MAX_BYTES) ]; then \
			echo "dvr-agent for linux-armv7 is $$size bytes: over the $(AGENT_MAX_BYTES)-byte budget"; exit 1; fi; \
		qemu=$$(command -v qemu-$$goarch-static || command -v qemu-$${goarch/mipsle/mipsel}-static || command -v qemu-$${goarch/arm64/aarch64}-static || true); \
		if [ -n "$$qemu" ]; then $$qemu $$out version >/dev/null || { echo "$$out does not run under $$qemu"; exit 1; }; fi; \
	done
	@# The smtp build (the recovery e-mail sent by dvr-agent itself, for
	@# firmware without a mailer): printed, not held to the budget.
	@out=$(AGENT_OUT)/dvr-agent-linux-armv7-smtp; \
		env CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 \
			$(GO) build -tags smtp -trimpath -ldflags '$(AGENT_LDFLAGS)' -o $$out ./cmd/dvr-agent; \
		size=$$(wc -c < $$out | tr -d ' '); base=$$(wc -c < $(AGENT_OUT)/dvr-agent-linux-armv7 | tr -d ' '); \
		awk -v n="linux-armv7 -tags smtp" -v s="$$size" -v b="$$base" 'BEGIN { printf "%-24s %9d bytes  %5.2f MB (%5.2f MiB), +%d bytes for the SMTP sender (no size budget)\n", n, s, s/1e6, s/1048576, s-b }'; \
		qemu=$$(command -v qemu-arm-static || true); \
		if [ -n "$$qemu" ]; then $$qemu $$out version | grep -q 'by smtp' || { echo "$$out does not run under $$qemu, or has no mailer"; exit 1; }; fi

agent-test-smtp:
	$(GO) test -count=1 -timeout 5m -tags smtp ./agent/mailer/ ./cmd/dvr-agent/

# A run that fails without writing a reproducer to testdata/fuzz is Go
# 1.26's fuzz coordinator race at the -fuzztime deadline (golang/go#75804,
# fixed in Go 1.27): reported as a flake, not a failure. A written
# reproducer always fails the target.
agent-fuzz:
	@set -e; for f in $(AGENT_FUZZ) ./server/audit:FuzzParseCheckpoint; do \
		pkg=$${f%%:*}; name=$${f#*:}; dir=$$pkg/testdata/fuzz/$$name; \
		before=$$(ls $$dir 2>/dev/null | wc -l); \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; then \
			after=$$(ls $$dir 2>/dev/null | wc -l); \
			if [ "$$after" -gt "$$before" ]; then echo "$$name: failing input written to $$dir"; exit 1; fi; \
			echo "$$name: stopped without a failing input (golang/go#75804 deadline race): not a finding"; \
		fi; \
	done

bench-agent:
	$(GO) test -run '^$$' -bench . -benchmem ./agent/...

# ---- the gRPC API ----
# Regenerate the gRPC API's Go code:
#
#   make proto-tools   install protoc (apt) and the pinned Go plugins into ./bin
#   make proto         regenerate proto/hotline/v1/*.pb.go
#   make proto-check   fail when the committed generated code is stale
#   make proto-lint    buf lint (STANDARD + COMMENTS), installing buf into ./bin

PROTO_DIR   := proto
PROTO_FILES := $(wildcard $(PROTO_DIR)/hotline/v1/*.proto)
PROTO_BIN   := $(CURDIR)/bin
PROTOC      ?= protoc

.PHONY: proto proto-tools proto-check proto-lint

proto-tools:
	GOBIN=$(PROTO_BIN) ./proto/install-tools.sh

proto: proto-tools
	PATH="$(PROTO_BIN):$$PATH" $(PROTOC) -I $(PROTO_DIR) -I /usr/include \
		--go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
		--go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
		$(patsubst $(PROTO_DIR)/%,%,$(PROTO_FILES))

proto-check: proto
	@git diff --exit-code -- $(PROTO_DIR) || \
		{ echo "proto: generated code is stale; run 'make proto' and commit"; exit 1; }

BUF_VERSION := v1.75.0

$(PROTO_BIN)/buf:
	GOBIN=$(PROTO_BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

## proto-lint: buf lint (STANDARD + COMMENTS) with local configuration only
proto-lint: $(PROTO_BIN)/buf
	cd $(PROTO_DIR) && $(PROTO_BIN)/buf lint

# ---- audit log benchmarks ----
# The audit log's benchmarks: verify throughput and auditor query
# latency over a log of HOTLINE_BENCH_AUDIT_EVENTS events (default
# 1,000,000), built once per run in the server/audit test database and
# sealed by the real sealer; each figure is printed with its goal, verify
# with a plain read of the same rows in the same run as its baseline.
# Goals: verify >= 500,000 events/s (at 10,000,000); p99 < 5 ms per query.
.PHONY: bench-audit

## bench-audit: verify throughput and audit query latency on a 1,000,000-event log
bench-audit:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_BENCH_AUDIT=1 && \
	  $(GO) test -run '^$$' -bench '^(BenchmarkVerify|BenchmarkAuditQuery)$$' -benchtime 3x \
	    -benchmem=false -timeout 60m ./server/audit/ | \
	  sed -u 's/^/bench-audit: /' && \
	  $(GO) test -run '^$$' -bench '^BenchmarkQueryAudit$$' -benchtime 1x \
	    -benchmem=false -timeout 60m ./server/postgres/ | \
	  sed -u 's/^/bench-audit (through the store, each query audited): /'

# ---- bulk import benchmark ----
# Bulk device import: the benchmark against a plain COPY.
HOTLINE_BENCH_IMPORT_ROWS ?= 1000000

.PHONY: bench-import

# Then, as a provisioner runs it: `hotlinectl devices import FILE` of
# generated CSV files of BENCH_IMPORT_FLAGS' -rows (default 500,000 and
# 2,000,000) over gRPC to a real `hotline-server serve`, against `psql
# \copy` of the same file (cmd/bench-import; goal 0.7), with the server's
# and the client's peak memory at each size (goal: flat).
BENCH_IMPORT_FLAGS ?=

## bench-import: import HOTLINE_BENCH_IMPORT_ROWS generated devices (default 1,000,000) and, in the same run, a plain COPY of the same rows into an identical table; then hotlinectl devices import of 500,000- and 2,000,000-row CSV files vs psql \copy, with peak memory; prints rows/s for both and the ratio (goal 0.7)
bench-import:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_BENCH_IMPORT_ROWS=$(HOTLINE_BENCH_IMPORT_ROWS) && \
	  $(GO) test ./server/postgres -run XXX -bench BenchmarkImport -benchtime 1x -count 1 -timeout 60m -v | grep -v '^=== ' && \
	  $(GO) run ./cmd/bench-import $(BENCH_IMPORT_FLAGS)

# ---- issue benchmark ----
# Benchmarks that need a running PostgreSQL:
#
#   make bench-issue                      gRPC IssueTemporaryPassword vs pgbench, c = 4, 8, 16, 10 s each
#   make bench-issue BENCH_ISSUE_FLAGS='-duration 20s -concurrency 1,4,16 -cpuprofile issue.pprof'
#   make bench-issue BENCH_ISSUE_FLAGS='-concurrency 8 -memprofile issue.mem'  (pprof -sample_index=alloc_space)
#
# PostgreSQL is found (or started) by deploy/dev/ensure-postgres.sh, as for
# `make test`; the benchmark creates a database of its own and drops it.

BENCH_ISSUE_FLAGS ?=

.PHONY: bench-issue

## bench-issue: issuances/s, p50, p99 over gRPC vs pgbench on the same transaction, and the CPU each took
bench-issue:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  $(GO) run ./cmd/bench-issue $(BENCH_ISSUE_FLAGS)

# ---- support console ----
# The console's page benchmark: server time (handler, service, PostgreSQL,
# template) for the device page and the audit query page over
# HOTLINE_BENCH_CONSOLE_ROWS devices and as many audit events (default
# 1,000,000), p50/p99 against the bare service calls measured in the same
# run, and each page's weight without cache. Goals: p99 < 20 ms, < 150 KB.
HOTLINE_BENCH_CONSOLE_ROWS ?= 1000000

.PHONY: bench-console

## bench-console: console page p50/p99 and weight on 1,000,000 devices and events
bench-console:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_BENCH_CONSOLE_ROWS=$(HOTLINE_BENCH_CONSOLE_ROWS) && \
	  $(GO) test -run '^$$' -bench '^BenchmarkConsolePages$$' -benchtime 1000x -timeout 60m -v ./server/console/ | grep -v '^=== '

# ---- registry and audit log at a vendor's scale ----
# A registry of SCALE_DEVICES devices on 20 production lines and an audit
# log of SCALE_EVENTS events, each built by INSERT … SELECT generate_series
# in a database of its own, then: lookups by serial and by device id, an
# unknown serial answered with near matches (the scan they replace timed in
# the same run as the baseline), audit queries by serial and by actor over
# 7 days, and verify. Goals: p99 < 10 ms per lookup, p99 < 5 ms per audit
# query, verify >= 500,000 events/s. At 10,000,000 each build takes minutes
# on a small machine; set smaller sizes for a quick look. The audit half at
# 10,000,000 events took 6 min 46 s on the 2-core development machine
# (insert 4 min 25 s, sealing 1 min 44 s, verify 15.7 s at 635,641
# events/s, 0.72x a plain read of the same rows; audit query p99 1.04 ms
# by serial, 1.08 ms by actor over 7 days).
SCALE_DEVICES ?= 10000000
SCALE_EVENTS  ?= 10000000
# SCALE_DATABASE_URL: a database to keep the registry in between runs (the
# first run builds it; later runs with the same SCALE_DEVICES measure it
# as it is). Empty: a database of its own, dropped afterwards.
SCALE_DATABASE_URL ?=

.PHONY: bench-scale

## bench-scale: lookups, near matches, audit queries and verify on a 10,000,000-device registry and a 10,000,000-event log
bench-scale:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  start=$$(date +%s) && \
	  $(if $(SCALE_DATABASE_URL),HOTLINE_BENCH_SCALE_DATABASE_URL='$(SCALE_DATABASE_URL)') \
	  HOTLINE_BENCH_SCALE_DEVICES=$(SCALE_DEVICES) $(GO) test -run '^$$' -bench '^BenchmarkScaleRegistry$$' \
	    -benchtime 1x -timeout 120m ./server/postgres/ | sed -u 's/^/bench-scale: /' && \
	  HOTLINE_BENCH_AUDIT=1 HOTLINE_BENCH_AUDIT_EVENTS=$(SCALE_EVENTS) $(GO) test -run '^$$' \
	    -bench '^(BenchmarkVerify|BenchmarkAuditQuery)$$' -benchtime 1x -timeout 120m ./server/audit/ | \
	  sed -u 's/^/bench-scale (audit, goals: verify >= 500000 events\/s, p99 < 5 ms): /' && \
	  echo "bench-scale: took $$(( $$(date +%s) - start )) s"

# ---- faults ----
# The fault tests (server/faults/): concurrent issuing clients retrying by request
# id against hotline-server processes while PostgreSQL restarts, fails over
# to a synchronous standby, turns read-only, a replica is SIGKILLed, the
# network degrades (toxiproxy) or the pool is exhausted. Every PostgreSQL
# they fault is a cluster they create (initdb as the postgres user, free
# loopback ports) and remove. `make test` runs the short versions
# (about 1.5 minutes); `make chaos` the longer ones, and prints per fault:
# requests sent, acknowledged, failed cleanly, unknown; acknowledged
# issuances missing, issuances without their audit event, duplicate
# sequences, sequence gaps, retries answered with another issuance; the
# time to the first success after the fault, and verify's result.
.PHONY: chaos

## chaos: the fault tests, long runs (HOTLINE_CHAOS=1), with the table of figures
chaos:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_CHAOS=1 && \
	  $(GO) test -count=1 -timeout 30m -v -run '^TestFault' ./server/faults/ 2>&1 | \
	  grep -v -e '^=== ' -e 'refused: ' ; exit $${PIPESTATUS[0]}

## screenshots: the console's browser test, writing the README's PNGs to server/console/screenshots
.PHONY: screenshots
screenshots:
	@url=$$(./deploy/dev/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  export HOTLINE_CHROMIUM=$${HOTLINE_CHROMIUM:-$$(./deploy/dev/ensure-chromium.sh)} HOTLINE_SCREENSHOTS=1 && \
	  $(GO) test -count=1 -run '^TestConsoleInARealBrowser$$' ./cmd/hotline-server/
