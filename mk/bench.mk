# bench.mk: benchmarks that need a running PostgreSQL (included from the Makefile).
#
#   make bench-issue                      gRPC IssueTemporaryPassword vs pgbench, c = 4, 8, 16, 10 s each
#   make bench-issue BENCH_ISSUE_FLAGS='-duration 20s -concurrency 1,4,16 -cpuprofile issue.pprof'
#
# PostgreSQL is found (or started) by scripts/ensure-postgres.sh, as for
# `make test`; the benchmark creates a database of its own and drops it.

BENCH_ISSUE_FLAGS ?=

.PHONY: bench-issue

## bench-issue: issuances/s, p50, p99 over gRPC vs pgbench on the same transaction, and the CPU each took
bench-issue:
	@url=$$(./scripts/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  $(GO) run ./tools/bench-issue $(BENCH_ISSUE_FLAGS)
