# proto.mk: regenerate the gRPC API's Go code (included from the Makefile).
#
#   make proto-tools   install protoc (apt) and the pinned Go plugins into ./bin
#   make proto         regenerate proto/hotline/v1/*.pb.go
#   make proto-check   fail when the committed generated code is stale
#   make proto-lint    buf lint (STANDARD), when buf is installed

PROTO_DIR   := proto
PROTO_FILES := $(wildcard $(PROTO_DIR)/hotline/v1/*.proto)
PROTO_BIN   := $(CURDIR)/bin
PROTOC      ?= protoc

.PHONY: proto proto-tools proto-check proto-lint

proto-tools:
	GOBIN=$(PROTO_BIN) ./tools/install-proto-tools.sh

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
