# Hotline: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /usr/bin/env bash
GO    ?= go
# Tests: each test package creates its own database on this server.
export HOTLINE_TEST_DATABASE_URL ?=
KEYRING ?= $(CURDIR)/.dev/keyring
LISTEN  ?= 127.0.0.1:7443

.PHONY: all build test vet fmt-check run demo clean

all: build

build:
	$(GO) build ./...
	@$(MAKE) --no-print-directory agent-size

## test: every test against a real PostgreSQL (found or started by scripts/ensure-postgres.sh)
test: fmt-check vet
	@url=$$(./scripts/ensure-postgres.sh) && \
	  export HOTLINE_TEST_DATABASE_URL=$${HOTLINE_TEST_DATABASE_URL:-$$url} && \
	  echo "test database server: $$HOTLINE_TEST_DATABASE_URL" && \
	  $(GO) test -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory agent-size

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## run: find or start PostgreSQL, migrate, create a dev keyring if none, serve on $(LISTEN)
run:
	@url=$$(./scripts/ensure-postgres.sh hotline) && \
	  export DATABASE_URL=$$url HOTLINE_KEYRING=$${HOTLINE_KEYRING:-$(KEYRING)} && \
	  $(GO) build -o bin/hotline-server ./cmd/hotline-server && \
	  ./bin/hotline-server serve --dev --listen $(LISTEN)

## demo: the whole story, printed step by step
demo:
	./scripts/demo.sh

clean:
	rm -rf bin .dev

include mk/*.mk
