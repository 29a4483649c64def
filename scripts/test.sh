#!/usr/bin/env bash
# Runs every test: unit, engine and (as root) lab tests. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "test.sh: go not found (need Go 1.26)" >&2; exit 1; }
go mod download
gofmt_out=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
[ -z "$gofmt_out" ] || { echo "gofmt needed on:"; echo "$gofmt_out"; exit 1; }
go vet ./...
go test -race -count=1 ./...
