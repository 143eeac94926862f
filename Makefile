# Inferno — build, serve, test. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
# llama.cpp's OpenMP threads must not busy-wait on shared cores (see DESIGN.md).
export OMP_WAIT_POLICY ?= passive
# Extra cargo flags, e.g. FEATURES="--features cuda". Set NATIVE=1 to build for this CPU only.
FEATURES ?=
ifeq ($(NATIVE),1)
export RUSTFLAGS += -C target-cpu=native
endif
BIN := target/release/inferno

PYDEPS := .cache/pydeps

.PHONY: help deps build serve pull test test-onnx test-openai test-browser test-replicas deploy-check lint fmt bench clean

help:
	@echo "make serve   - install build deps if needed, build, download the default model, serve on 127.0.0.1:8080"
	@echo "make test    - build and run every test (fetches the test model once)"
	@echo "make lint    - cargo fmt --check and clippy -D warnings"
	@echo "make bench   - criterion micro-benchmarks"
	@echo "make deploy-check  - hadolint + offline validation of deploy/k8s (with self-test)"
	@echo "make test-replicas - drain test: 3 replicas behind HAProxy, SIGTERM one under load"

# llama.cpp needs cmake and clang/libclang (bindgen). Install them when missing and we are root.
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v clang >/dev/null || missing="$$missing clang"; \
	ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "please install:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; \
		fi; \
	fi

build: deps
	$(CARGO) build --release --locked $(FEATURES)

pull: build
	$(BIN) pull

serve: build
	$(BIN) serve $(ARGS)

test: build
	$(CARGO) test --release --locked $(FEATURES)
	$(CARGO) test --release --locked --features otel --lib telemetry
	$(MAKE) test-onnx
	$(MAKE) test-openai
	$(MAKE) test-browser
	$(MAKE) test-replicas
	$(MAKE) deploy-check

# The official openai Python client against the built binary and the default model.
test-openai: build
	@[ -d $(PYDEPS)/openai ] || python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --root-user-action=ignore --target $(PYDEPS) openai
	PYTHONPATH=$(PYDEPS) python3 tests/openai_client.py $(BIN) "$$($(BIN) pull --quiet)"

# The ONNX embedding backend against the real MiniLM model and ONNX Runtime, fetched by
# `inferno pull minilm` (model, tokenizer, runtime library, in that order).
test-onnx: build
	@set -e; set -- $$($(BIN) pull minilm --quiet); \
	INFERNO_ONNX_MODEL=$$1 INFERNO_ONNX_TOKENIZER=$$2 ORT_DYLIB_PATH=$$3 \
		$(CARGO) test --release --locked --lib onnx -- --ignored

# The web chat page in Debian's Chromium, driven by playwright-core (installs what is missing).
test-browser: build
	tests/browser/run.sh $(BIN) "$$($(BIN) pull --quiet)"

# Three replicas behind HAProxy on loopback, one drained under load: no request may fail.
test-replicas: build
	tests/replicas/run.sh $(BIN) "$$($(BIN) pull --quiet)"

# Dockerfile lint and offline validation of the Kubernetes manifests (must reject broken ones).
deploy-check:
	deploy/validate.sh --self-test

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets $(FEATURES) -- -D warnings

bench: deps
	$(CARGO) bench --locked $(FEATURES)

clean:
	$(CARGO) clean
