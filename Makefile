# roam — common tasks. The lab, demo and interop targets need root.
GO       ?= go
FUZZTIME ?= 10s
FUZZTIME_LONG ?= 10m

# Installation layout (make install PREFIX=/usr DESTDIR=/tmp/stage).
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
SYSTEMDDIR  ?= $(PREFIX)/lib/systemd/system

# roam version: the newest vX.Y.Z tag (git describe), else 0.0.0+git<commit>;
# both are valid Debian versions. COMMIT is the abbreviated commit.
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-\([0-9]*\)-g/+\1.g/'); \
	if [ -n "$$v" ]; then echo "$$v"; elif [ -n "$(COMMIT)" ]; then echo "0.0.0+git$(COMMIT)"; else echo 0.0.0; fi)
LDFLAGS ?= -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# urfave_cli_no_docs leaves urfave's Markdown output and go-md2man
# (blackfriday) out of the binary: their package initialisation cost every
# start of roam, twice in a connect that starts the daemon. make man
# renders the pages from a build without it.
TAGS    ?= urfave_cli_no_docs

.PHONY: all build man completions units install uninstall deb test demo lab interop soak bench-roam bench-torture bench-switch bench-tput fuzz fuzz-long vet clean

all: build

# Static (CGO_ENABLED=0), as the .deb has it: no dynamic loader at each
# start of the CLI and the daemon (about 1.5 ms of every roam connect).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o bin/roam ./cmd/roam

# roam(8) from the CLI definition, roam.toml(5) from docs/roam.toml.5.md,
# rendered by bin/roam-man: the same roam built without TAGS, which keeps
# the hidden `roam man` and the generator (it is not installed).
man:
	mkdir -p bin/man
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/roam-man ./cmd/roam
	bin/roam-man man > bin/man/roam.8
	bin/roam-man man docs/roam.toml.5.md > bin/man/roam.toml.5

completions: build
	mkdir -p bin/completions
	bin/roam completion bash > bin/completions/roam.bash
	bin/roam completion zsh > bin/completions/_roam
	bin/roam completion fish > bin/completions/roam.fish

# systemd units from contrib/systemd/*.in, with the installed binary's path.
units:
	mkdir -p bin/systemd
	for u in contrib/systemd/*.service.in; do \
		sed 's|@BINDIR@|$(BINDIR)|g' "$$u" > bin/systemd/$$(basename "$$u" .in); \
	done

# The binary, man pages, completions, systemd units and
# /etc/roam/roam.toml.example. An existing roam.toml is never touched.
install: build man completions units
	install -D -m 0755 bin/roam $(DESTDIR)$(BINDIR)/roam
	install -D -m 0644 bin/man/roam.8 $(DESTDIR)$(MANDIR)/man8/roam.8
	install -D -m 0644 bin/man/roam.toml.5 $(DESTDIR)$(MANDIR)/man5/roam.toml.5
	install -D -m 0644 bin/completions/roam.bash $(DESTDIR)$(BASHCOMPDIR)/roam
	install -D -m 0644 bin/completions/_roam $(DESTDIR)$(ZSHCOMPDIR)/_roam
	install -D -m 0644 bin/completions/roam.fish $(DESTDIR)$(FISHCOMPDIR)/roam.fish
	for u in bin/systemd/*.service; do \
		install -D -m 0644 "$$u" $(DESTDIR)$(SYSTEMDDIR)/$$(basename "$$u"); \
	done
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/roam
	install -m 0644 contrib/roam.toml.example $(DESTDIR)$(SYSCONFDIR)/roam/roam.toml.example

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/roam $(DESTDIR)$(MANDIR)/man8/roam.8 $(DESTDIR)$(MANDIR)/man5/roam.toml.5 \
		$(DESTDIR)$(BASHCOMPDIR)/roam $(DESTDIR)$(ZSHCOMPDIR)/_roam $(DESTDIR)$(FISHCOMPDIR)/roam.fish \
		$(DESTDIR)$(SYSCONFDIR)/roam/roam.toml.example
	for u in contrib/systemd/*.service.in; do \
		rm -f $(DESTDIR)$(SYSTEMDDIR)/$$(basename "$$u" .in); \
	done

# A Debian package with the same content as make install PREFIX=/usr,
# built by dpkg-deb: roam_<version>_<arch>.deb in this directory.
deb:
	VERSION="$(VERSION)" COMMIT="$(COMMIT)" GO="$(GO)" ./scripts/deb.sh

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
# not in CI). REPS=2 for a quick run; see docs/benchmarks.md.
bench-roam:
	./scripts/bench-roam.sh

# The torture sequence of issue 15: 60 seeded random events (link, address,
# NAT, IPv6-only, outage, SIGSTOP, gateway address) over about 10 minutes
# per client, roam vs strongSwan's client (root; not in CI). TORTURE=short
# for a 9-event look; SEED, EVENTS, DURATION, KINDS; see docs/benchmarks.md.
TORTURE ?= 1
bench-torture:
	TORTURE=$(TORTURE) ./scripts/bench-roam.sh

# Gateway-initiated moves (roam gateway switch) vs a full reconnect, with
# the target 2 RTT + 10 ms (root, minutes; not in CI). REPS=2 for a quick run.
bench-switch:
	./scripts/bench-switch.sh

# Throughput through roam <-> roam gateway, wireguard-go <-> wireguard-go and
# roam -> strongSwan in the same lab, no added delay (root, minutes; not in
# CI). REPS=1 DURATION=4s for a quick run; see docs/benchmarks.md.
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

# Every fuzz target for FUZZTIME_LONG each (default 10 minutes: hours in
# all; not in CI). A crash stops the run; its input is left in the
# package's testdata/fuzz as a seed.
fuzz-long:
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME_LONG)

vet:
	gofmt -l $$(git ls-files '*.go')
	$(GO) vet ./...

clean:
	rm -rf bin roam_*.deb
