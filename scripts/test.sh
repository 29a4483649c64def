#!/usr/bin/env bash
# Runs every test: unit, engine and (as root) lab tests. Installs what it needs.
# Environment: ROAM_INTEROP=0 skips the roam <-> strongSwan interop matrix.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "test.sh: go not found (need Go 1.26)" >&2; exit 1; }

declare -a summary
failed=0
step() { # step NAME CMD...: runs CMD, records pass/fail and the time taken
	local name=$1; shift
	local t0=$SECONDS
	echo "== $name"
	if "$@"; then
		summary+=("PASS  $name ($((SECONDS - t0)) s)")
	else
		summary+=("FAIL  $name ($((SECONDS - t0)) s)")
		failed=1
	fi
}

gofmt_check() {
	local out
	out=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
	[ -z "$out" ] || { echo "gofmt needed on:"; echo "$out"; return 1; }
}

if [ "$(id -u)" -eq 0 ]; then
	step "install dependencies" ./scripts/install-deps.sh
	lab_note="lab tests run as root"
else
	step "go mod download" go mod download
	lab_note="not root: lab tests (scripts/lab, scripts/interop) skip themselves"
fi
step "gofmt" gofmt_check
step "go vet" go vet ./...
# Unit and engine tests first; the lab packages run after them on their own
# so a lab failure cannot hide the unit results (and they are not racing the
# unit tests for the 2 CPUs).
unit_pkgs=$(go list ./... | grep -v '/scripts/')
step "unit and engine tests (race)" go test -race -count=1 -timeout 10m $unit_pkgs
# The CLI as it ships (make build's TAGS): without the man page generator.
step "cmd/roam as shipped (race, -tags urfave_cli_no_docs)" go test -race -count=1 -timeout 5m -tags urfave_cli_no_docs ./cmd/roam/
step "go vet -tags urfave_cli_no_docs" go vet -tags urfave_cli_no_docs ./cmd/roam/
step "lab tests ($lab_note)" go test -race -count=1 -timeout 30m ./scripts/...

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${ROAM_INTEROP:-}" = "0" ]; then
	echo "note: interop matrix skipped (ROAM_INTEROP=0)"
fi
exit $failed
