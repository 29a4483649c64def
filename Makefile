# roam — common tasks. The lab, demo and interop targets need root.
GO       ?= go
FUZZTIME ?= 10s

.PHONY: all build test demo lab interop soak bench-roam bench-switch bench-tput fuzz vet clean

all: build

build:
	$(GO) build -o bin/roam ./cmd/roam

# Everything CI runs: gofmt, vet, race tests, root-only lab tests.
test:
	./scripts/test.sh

# Connect through the netns lab to strongSwan and ping (root).
demo:
	./scripts/demo.sh

# The lab's self-test (strongSwan client <-> strongSwan gateway) and the
# interop tests (root; ROAM_INTEROP=0 skips the interop matrix).
lab:
	$(GO) test -count=1 -v ./scripts/lab/ ./scripts/interop/

# The interop matrix roam <-> strongSwan and roam <-> roam (root).
interop:
	ROAM_INTEROP=1 $(GO) test -count=1 -v -timeout 15m ./scripts/interop/

# Five minutes of rekeys under a 10 ms ping and a TCP transfer against
# strongSwan, Child SA 30 s and IKE SA 60 s on both sides (root; not in CI).
soak:
	ROAM_SOAK=1 $(GO) test -count=1 -v -timeout 20m -run TestRekeySoak ./scripts/interop/

# The MOBIKE handover benchmark, roam vs strongSwan's client (root, minutes;
# not in CI). REPS=2 for a quick run; see README "Handover benchmark".
bench-roam:
	./scripts/bench-roam.sh

# Gateway-initiated moves (roam gateway switch) vs a full reconnect, with
# the target 2 RTT + 10 ms (root, minutes; not in CI). REPS=2 for a quick run.
bench-switch:
	./scripts/bench-switch.sh

# Throughput through roam <-> roam gateway, wireguard-go <-> wireguard-go and
# roam -> strongSwan in the same lab, no added delay (root, minutes; not in
# CI). REPS=1 DURATION=4s for a quick run; see README "Throughput benchmark".
bench-tput:
	./scripts/bench-tput.sh

# A short run of every fuzz target in the module (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

vet:
	gofmt -l $$(git ls-files '*.go')
	$(GO) vet ./...

clean:
	rm -rf bin
