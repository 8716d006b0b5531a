# The audit log's benchmarks (issue 4): verify throughput and auditor query
# latency over a log of HOTLINE_BENCH_AUDIT_EVENTS events (default
# 1,000,000), built once per run in the server/audit test database.
# Goals: verify >= 300,000 events/s; p99 < 5 ms per query.
.PHONY: bench-audit

## bench-audit: verify throughput and audit query latency on a 1,000,000-event log
bench-audit:
	@url=$$(./scripts/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} HOTLINE_BENCH_AUDIT=1 && \
	  $(GO) test -run '^$$' -bench '^(BenchmarkVerify|BenchmarkAuditQuery)$$' -benchtime 3x \
	    -benchmem=false -timeout 60m ./server/audit/ | \
	  sed -u 's/^/bench-audit: /'
