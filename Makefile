# matrx — the two commands a new machine needs (as root, Debian 12):
#   make up     install everything, build, import the image, start containerd
#               and matrxd, and show a sandbox running a command
#   make test   the whole suite: unit + integration against a private
#               containerd, a local S3 server and real FUSE mounts
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/matrx-dev/matrx/version.Version=$(VERSION)
# matrx-init's idle PID 1 runs without the Go runtime on amd64: its entry
# point is initproc.EntrySymbol (runtime/initproc/pid1_linux_amd64.s).
# Deferred (=): on a fresh machine Go is installed after this is parsed.
INIT_LDFLAGS = $(if $(filter amd64,$(shell $(GO) env GOARCH)),-E matrx_pid1_entry)
BIN := build/bin
IMAGES := build/images

# The second pass runs, on containerd 2 (see bootstrap/tools.sh), the tests
# tagged testenv.BothContainerds in the packages that drive containerd; the
# others skip themselves in that pass.
CONTAINERD2_PACKAGES := ./runtime/ ./daemon/ ./sandbox/

.PHONY: all build deps tools image image-minimal test test-unit lint up down bench clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/matrxd ./cmd/matrxd
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/matrx ./cmd/matrx
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS) $(INIT_LDFLAGS)' -o $(BIN)/matrx-init ./cmd/matrx-init
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/matrx-relay ./cmd/matrx-relay
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/matrx-vk ./cmd/matrx-vk

# Host packages (containerd, runc, image tools, FUSE, awscli, vagrant...).
deps:
	bash bootstrap/install.sh --packages-only --test-tools

# Test tools built from the Go module proxy (versitygw S3 server, containerd 2,
# the Kubernetes control plane of the fleet tests), cached outside the clone.
tools:
	bash bootstrap/tools.sh

$(IMAGES)/minimal.tar: bootstrap/image/build-minimal.sh bootstrap/image/lib.sh $(wildcard bootstrap/image/ocipack/*.go)
	bash bootstrap/image/build-minimal.sh $@

$(IMAGES)/sandbox.tar: bootstrap/image/build-sandbox.sh bootstrap/image/lib.sh $(wildcard bootstrap/image/ocipack/*.go)
	@# A link to the cache entry it would be relinked to: mv refuses "the same file".
	rm -f $@
	bash bootstrap/image/build-sandbox.sh $@

image-minimal: $(IMAGES)/minimal.tar
image: $(IMAGES)/sandbox.tar

# staticcheck is pinned and fetched from the Go module proxy like every
# other module (checksum-verified); nothing is installed on the host.
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Everything, for real: MATRX_REQUIRE_INTEGRATION=1 turns every "missing
# prerequisite" skip into a failure, so a green run means the integration
# tests ran.
test: deps tools image-minimal image lint
	@mkdir -p build
	MATRX_REQUIRE_INTEGRATION=1 $(GO) test -race -count=1 -timeout 30m ./... 2>&1 | tee build/test.log; exit $${PIPESTATUS[0]}
	@echo "== second pass: containerd 2 + runc 1.2 (user namespaces through idmapped mounts)"
	MATRX_REQUIRE_INTEGRATION=1 MATRX_TEST_CONTAINERD_DIR=$(CURDIR)/build/tools/containerd2 MATRX_TEST_EXPECT_IDMAP=1 \
		$(GO) test -race -count=1 -timeout 15m $(CONTAINERD2_PACKAGES) 2>&1 | tee -a build/test.log; exit $${PIPESTATUS[0]}
	@# The crun pass: the runtime package's integration tests and the
	@# daemon's hostile suites with MATRX_TEST_OCI_RUNTIME=crun
	@# (bootstrap/lib/crun-pass.sh says which on which containerd); only
	@# what proves crun runs everything the runtime does (the packages above
	@# runtime do not depend on the OCI runtime). Budget: 3.5 minutes. It runs in
	@# a mount namespace without the hybrid cgroup2 mount, which crun
	@# refuses when it holds controllers
	@# (bootstrap/lib/without-cgroup2-controllers.sh).
	@echo "== third pass: crun as the OCI runtime (runtime integration tests, hostile suites), containerd 1.6 then 2"
	MATRX_REQUIRE_INTEGRATION=1 MATRX_TEST_OCI_RUNTIME=crun GO="$(GO)" CONTAINERD2_DIR=$(CURDIR)/build/tools/containerd2 \
		bash bootstrap/lib/without-cgroup2-controllers.sh bash bootstrap/lib/crun-pass.sh 2>&1 | tee -a build/test.log; exit $${PIPESTATUS[0]}

# Unit tests only (no root, containerd or S3 needed; integration tests skip).
test-unit:
	$(GO) test -race ./...

up: deps build image
	bash bootstrap/up.sh

down:
	bash bootstrap/up.sh --down

# The Go benchmarks run in a mount namespace without a hybrid host's cgroup2
# mount, so the lifecycle table can have crun rows (see the test target).
bench: deps tools build image-minimal image
	MATRX_REQUIRE_INTEGRATION=1 bash bootstrap/lib/without-cgroup2-controllers.sh $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/ ./fleet/
	$(GO) run ./mounts/hotsync/cmd/hotbench
	@echo "hot sync again, small case, plain directories on the host's root filesystem:"
	$(GO) run ./mounts/hotsync/cmd/hotbench -cases small -disk=false
	@echo "hot sync again, small case, with a 20 ms round trip (EC2 to S3):"
	$(GO) run ./mounts/hotsync/cmd/hotbench -cases small -rtt 20ms

clean:
	rm -rf build
