# Bulk device import (issue 5): the benchmark against a plain COPY.
HOTLINE_BENCH_IMPORT_ROWS ?= 1000000

.PHONY: bench-import

## bench-import: import HOTLINE_BENCH_IMPORT_ROWS generated devices (default 1,000,000) and, in the same run, a plain COPY of the same rows into an identical table; prints rows/s for both and the ratio (goal 0.7)
bench-import:
	@url=$$(./scripts/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_BENCH_IMPORT_ROWS=$(HOTLINE_BENCH_IMPORT_ROWS) && \
	  $(GO) test ./server/postgres -run XXX -bench BenchmarkImport -benchtime 1x -count 1 -timeout 60m -v | grep -v '^=== '
