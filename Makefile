# roam — common tasks. The lab, demo and interop targets need root.
GO       ?= go
FUZZTIME ?= 10s
FUZZTIME_LONG ?= 10m

.PHONY: all build test demo lab interop soak bench-roam bench-switch fuzz fuzz-long vet clean

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

# A short run of every fuzz target in the module (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

# Every fuzz target for FUZZTIME_LONG each (default 10 minutes: hours in
# all; not in CI). A crash stops the run; its input is left in the
# package's testdata/fuzz as a seed.
fuzz-long:
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME_LONG)

vet:
	gofmt -l $$(git ls-files '*.go')
	$(GO) vet ./...

clean:
	rm -rf bin
