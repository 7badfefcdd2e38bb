# locality-failover: build, test and ship the proxy-wasm failover filter.
# The two commands a newcomer needs: `make demo` and `make test`.

SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
WASM := build/locality_failover.wasm
SCENARIOS_SHARED := $(wildcard ../shared/scenarios/*.json)
SCENARIOS_OWN := $(wildcard tests/scenarios/*.json)
RUNNER := $(CARGO) run -q --release -p host-harness --

.PHONY: all setup build test unit clippy scenarios wasm-test e2e bench demo oci fuzz fuzz-short soak lint clean istiod-golden

all: build

setup:
	scripts/setup.sh

## build: the release .wasm (after wasm-opt when it is installed)
build: $(WASM)

$(WASM): $(shell find filter/src -name '*.rs') filter/Cargo.toml Cargo.toml Cargo.lock
	scripts/setup.sh --tools
	$(CARGO) build --profile wasm -p locality-failover --target $(WASM_TARGET)
	@mkdir -p build
	@if command -v wasm-opt >/dev/null 2>&1; then \
	  wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
	    --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue --enable-reference-types \
	    target/$(WASM_TARGET)/wasm/locality_failover.wasm -o $@; \
	else cp target/$(WASM_TARGET)/wasm/locality_failover.wasm $@; fi
	@ls -l $@

## test: everything CI runs (unit, scenarios in sim, wasm engine tests, fuzz smoke, real-Envoy e2e)
test: setup build unit clippy scenarios wasm-test fuzz-short e2e
	@echo "make test: all suites passed"

unit:
	$(CARGO) test --workspace --release

clippy:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p locality-failover --target $(WASM_TARGET) --profile wasm -- -D warnings

## scenarios: every shared and project scenario in sim mode, 1 and 2 workers
scenarios:
	$(RUNNER) run --mode sim $(SCENARIOS_SHARED) $(SCENARIOS_OWN) > /dev/null
	$(RUNNER) run --mode sim --workers 2 $(SCENARIOS_SHARED) $(SCENARIOS_OWN) > /dev/null
	@echo "scenarios (sim, workers 1 and 2): passed"

## wasm-test: the engine's unit tests on wasm32-unknown-unknown under wasm-bindgen-test
wasm-test:
	scripts/setup.sh --wasm-test
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  $(CARGO) test -p locality-failover --lib --target wasm32-unknown-unknown

## e2e: the real Envoy 1.40: sim, envoy and native modes must agree
e2e: build
	tests/e2e.sh

bench: build
	scripts/setup.sh --tools
	scripts/bench.sh

demo: build
	scripts/demo.sh

oci: build
	scripts/oci.sh

fuzz:
	scripts/fuzz.sh 60

fuzz-short:
	scripts/fuzz.sh 10

soak: build
	tests/soak.sh

lint:
	$(RUNNER) lint $(CONFIG)

clean:
	$(CARGO) clean
	rm -rf build

## istiod-golden: regenerate tests/golden/istiod/ with istiod's own generator (needs Go;
## the first run downloads Istio's modules into ~/go). `make test` only reads the files.
istiod-golden:
	cd tools/istiod-golden && PILOT_ENABLE_AMBIENT=true ISTIOD_GOLDEN_WRITE=1 go test -count=1 ./...
	cd tools/istiod-golden && PILOT_ENABLE_AMBIENT=true go test -count=1 ./...
	@echo "istiod-golden: tests/golden/istiod regenerated (a second run gave the same bytes)"
