# lxcfleet — see README.md. Everything here runs as root on a Debian 12 host.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export CGO_ENABLED := 1

BIN      ?= bin/lxcfleet
N        ?= 20
GOTEST   ?= go test
BENCHARGS ?=
TESTARGS ?=

.PHONY: all setup build test test-short fleet-acceptance fuzz mutants bench-builds bench-scale demo demo-clean bench lint fmt clean deb

all: build

## setup: install what building and testing need (idempotent)
setup:
	scripts/setup-host

## build: the lxcfleet binary (cgo, against liblxc)
build:
	go build -trimpath -ldflags "-X main.version=$$(packaging/deb-version)" -o $(BIN) ./cmd/lxcfleet

## test: set the host up, then vet and run every test (real containers; root): scripts/run-tests
## runs fleet's package (etcd leases, mostly waiting) beside the others (one package at a time), the
## mutants whose tests need no lockers (all but 7) and the fuzz targets beside both at idle CPU
## priority (chrt --idle: only on the CPU the tests leave), then the other 7 mutants alone
test: setup build
	go vet ./...
	BIN=$(BIN) GOTEST="$(GOTEST)" TESTARGS="$(TESTARGS)" FUZZTIME=10s scripts/run-tests

## fleet-acceptance: issue 21's acceptance at full count (make test leaves it out: narrower tests
## prove its rules there; TestFleetAcceptance's skip names them): 4 real
## agents, a 3-member etcd; 10 runs each of a SIGSTOPped and a partitioned slot holder, 3 of a host's
## restart and outage, 5 of a canary failing during quorum loss; figures in results/fleet-acceptance.json
fleet-acceptance: build
	mkdir -p results
	CI=true LXCFLEET_TEST_BIN=$(abspath $(BIN)) LXCFLEET_FLEET_ACCEPTANCE=full \
	  LXCFLEET_FLEET_ACCEPTANCE_REPORT=$(abspath results/fleet-acceptance.json) \
	  flock /tmp/lxcfleet-heavy.lock $(GOTEST) -count=1 -timeout 60m -run '^TestFleetAcceptance$$' -v ./fleet/

## mutants: break each rule of the rollout policy on purpose, one at a time,
## and check that the fast tests (go test ./rollout/) catch every mutant
mutants:
	go run ./internal/mutants

## fuzz: run each fuzz target briefly (FUZZTIME each; seeds are in testdata/fuzz)
FUZZTIME ?= 30s
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./agent/
	go test -run '^$$' -fuzz '^FuzzValidateName$$' -fuzztime $(FUZZTIME) ./agent/
	go test -run '^$$' -fuzz '^FuzzApplyEntries$$' -fuzztime $(FUZZTIME) ./mounts/

## test-short: the tests without setup (for a host already set up)
test-short: build
	LXCFLEET_TEST_BIN=$(abspath $(BIN)) $(GOTEST) -count=1 -p 1 -timeout 60m $(TESTARGS) ./...

## demo: set up, make a demo fleet of N lockers and run a real update-code (A -> B) on it
demo: setup build
	N=$(N) scripts/demo

## demo-clean: destroy the demo fleet
demo-clean:
	scripts/demo --clean

## bench-scale: the storm and the paced offline update at each N of NS (default 50,100,300), with the
## agent's RSS and CPU: results/scale-*/scale.md
bench-scale: NS = 50,100,300
bench-scale: setup build
	go build -trimpath -o bin/lockerbench ./bench/cmd/lockerbench
	bin/lockerbench scale -n $(NS) -lxcfleet $(BIN) -out results

## deb: the .deb, built with debhelper (binary, systemd unit enabled and started on install, default config,
## lxc-stop-all, update-code, lxc-start-all, the nginx example) in bin/; version from git tags; then lintian
deb:
	@deb=$$(packaging/build-deb $(dir $(BIN))) && echo "$$deb" && lintian --fail-on error --allow-root "$$deb"

## bench: issue 7's benchmark: N lockers (default 300; make bench N=20), five
## update scenarios side by side; then issue 20's: a client at each locker (a new
## connection per request, 2 a second) during a rolling (6) and an offline (7)
## update, held sockets beside today's, and sleeping lockers (8: twice as many as
## fit awake, 10% with traffic; memory, CPU, first request vs one start, an update);
## results/<timestamp>/ report.json, report.md, healthy.png; the latest report.md
## and chart are copied to bench/latest/ (BENCHARGS='-scenarios 6,7,8' for issue 20's alone)
bench: N = 300
bench: setup build
	go build -trimpath -o bin/lockerbench ./bench/cmd/lockerbench
	CGO_ENABLED=0 go build -trimpath -o $(dir $(BIN))lxcfleet-listenfd ./cmd/lxcfleet-listenfd
	bin/lockerbench run -n $(N) -lxcfleet $(BIN) -out results $(BENCHARGS)
	@latest=$$(ls -td results/*/ | head -1); mkdir -p bench/latest; \
	  cp $$latest/report.md $$latest/report.json bench/latest/; \
	  if [ -f $$latest/healthy.png ]; then cp $$latest/healthy.png bench/latest/; fi; \
	  echo "results: $$latest (copied to bench/latest/)"

## bench-builds: issue 12's build timings (needs the npm registry; prints them)
bench-builds:
	go test -run '^$$' -bench BuildTimes -benchtime 1x -v ./codeupdate/

## lint: formatting, vet and the import rules
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	go test -count=1 ./internal/archtest/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
