#!/usr/bin/env bash
# install-proto-tools.sh installs what `make proto` needs, locally:
#   protoc            from Debian's protobuf-compiler (apt-get; root or sudo)
#   protoc-gen-go     google.golang.org/protobuf, same version as go.mod
#   protoc-gen-go-grpc pinned below
# The Go plugins go to $GOBIN (default ./bin). Nothing is fetched from a
# remote plugin registry.
set -euo pipefail

cd "$(dirname "$0")/.."
PROTOC_GEN_GO_VERSION=${PROTOC_GEN_GO_VERSION:-v1.36.12}
PROTOC_GEN_GO_GRPC_VERSION=${PROTOC_GEN_GO_GRPC_VERSION:-v1.6.2}
export GOBIN=${GOBIN:-$PWD/bin}

if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get install -y protobuf-compiler libprotobuf-dev >/dev/null ||
		{ $sudo apt-get update >/dev/null && $sudo apt-get install -y protobuf-compiler libprotobuf-dev >/dev/null; }
fi

want() { # want BINARY VERSION: true when BINARY in GOBIN is not VERSION
	[ -x "$GOBIN/$1" ] || return 0
	! go version -m "$GOBIN/$1" 2>/dev/null | grep -q "mod.*$2"
}
if want protoc-gen-go "$PROTOC_GEN_GO_VERSION"; then
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
if want protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"; then
	go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi
echo "protoc: $(protoc --version); plugins in $GOBIN"
