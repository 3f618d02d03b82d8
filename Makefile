# cwm: `make run` starts the receiver on port 8000 with the example config; `make test` installs
# what the tests need (Debian packages) and runs every test; `make bench` prints the benchmarks;
# `make fuzz` runs each fuzz target for FUZZ_SECONDS.

CARGO   ?= cargo
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

PORT    ?= 8000
WEBHOOKS_CONFIG_FILE    ?= config/examples/webhooks.json
CONNECTIONS_CONFIG_FILE ?= config/examples/connections.json
# `make run` serves Webhook Connect with the in-memory buffer unless a broker URL is set (the
# buffer is lost when the receiver stops; see docs/WEBHOOK_CONNECT.md).
WEBHOOK_CONNECT_ENABLED ?= true

FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= json_body log_payload subst etcd_key webhook_config auth_headers

.PHONY: run test bench build lint fmt scenario examples k8s-validate fuzz deny audit deps-build deps-test deps-bench deps-deny clean

# Install Debian packages whose command is missing: $(call need,<command>,<package>)
define need
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo ">> installing $(2) (provides $(1))"; \
	  $(APT) install -y -qq $(2) >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq $(2); }; }
endef

deps-build:
	$(call need,protoc,protobuf-compiler)
	$(call need,cc,build-essential)
	$(call need,make,make)

# Test servers from Debian, and a virtualenv with the Python peers (a stock RQ worker) from PyPI.
VENV ?= $(CURDIR)/target/venv
export CWM_TEST_VENV := $(VENV)

deps-test: deps-build
	$(call need,etcd,etcd-server)
	$(call need,etcdctl,etcd-client)
	$(call need,curl,curl)
	$(call need,openssl,openssl)
	$(call need,redis-server,redis-server)
	$(call need,clickhouse-server,clickhouse-server)
	$(call need,clickhouse-client,clickhouse-client)
	$(call need,rabbitmq-server,rabbitmq-server)
	$(call need,chromium,chromium)
	@python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || $(APT) install -y -qq python3-venv
	@[ -x $(VENV)/bin/rq ] || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q 'rq>=1.16,<3'; }
	@[ -x $(VENV)/bin/openapi-spec-validator ] || $(VENV)/bin/pip install -q 'openapi-spec-validator>=0.7,<0.8'
	@[ -x $(VENV)/bin/kubernetes-validate ] || $(VENV)/bin/pip install -q 'kubernetes-validate>=1.34,<2'

deps-bench: deps-test
	$(call need,wrk,wrk)
	$(call need,python3,python3)

run: deps-build
	PORT=$(PORT) WEBHOOKS_CONFIG_FILE=$(WEBHOOKS_CONFIG_FILE) CONNECTIONS_CONFIG_FILE=$(CONNECTIONS_CONFIG_FILE) \
	  WEBHOOK_CONNECT_ENABLED=$(WEBHOOK_CONNECT_ENABLED) \
	  $(CARGO) run --release --locked -p cwm-receiver

build: deps-build
	$(CARGO) build --locked --workspace --bins

lint: deps-build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Licences, banned crates and sources (offline). `make audit` adds the advisory database, which
# needs the network.
# Built once, without LTO and at opt-level 1: a check does not need a fast binary, and this halves
# the install time on a 2-core machine.
deps-deny:
	@command -v cargo-deny >/dev/null 2>&1 || CARGO_PROFILE_RELEASE_LTO=off \
	  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
	  CARGO_PROFILE_RELEASE_DEBUG=0 $(CARGO) install --locked cargo-deny --version '^0.20'

deny: deps-deny
	$(CARGO) deny --locked check licenses bans sources

audit: deps-deny
	$(CARGO) deny --locked check advisories

# Unit tests, component tests against real servers, black-box tests of the built binaries,
# the embedding examples, then the lint gate, the licence and source check (cargo-deny) and the
# scenario scripts (live config reload, Webhook Connect, etcd namespaces), with the Kubernetes
# manifest checks (k8s-validate) after the examples.
test: deps-test build
	$(CARGO) test --locked --workspace
	$(MAKE) examples
	$(MAKE) k8s-validate
	$(MAKE) lint
	$(MAKE) deny
	$(MAKE) scenario

# The embedding examples (examples/examples/): each demonstrates its point and exits 0.
EXAMPLES ?= embed_axum config_only custom_sink
examples: deps-build
	$(CARGO) build --locked -q -p cwm-examples --examples
	for e in $(EXAMPLES); do timeout 120 $(CARGO) run --locked -q -p cwm-examples --example $$e || exit 1; done

# The scenario scripts of docker/scenario/, run without Docker (local processes on free ports).
scenario: deps-test build
	bash docker/scenario/02_connector/run_local.sh
	bash docker/scenario/04_connector_advanced/run_local.sh
	bash docker/scenario/05_etcd_namespaces/run_local.sh
	bash docker/scenario/06_vault_etcd_secrets/run_local.sh
	bash docker/scenario/01_live_config/run_local.sh

# The Kubernetes manifests (deploy/kubernetes/): render both overlays offline (render.py, the same
# objects as `kubectl kustomize`), check the receiver's env names, security context and config
# wiring against the built binary, then validate every object against the Kubernetes schemas
# shipped by kubernetes-validate (nothing is downloaded).
K8S_VERSION ?= 1.34.0
k8s-validate: deps-test
	$(CARGO) build --locked -q -p cwm-receiver
	$(VENV)/bin/python deploy/kubernetes/render.py check --out target/k8s \
	  --receiver-bin $${CARGO_TARGET_DIR:-target}/debug/cwm-receiver
	$(VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_VERSION) target/k8s/*.yaml

bench: deps-bench
	bash tests/bench/run.sh

# cargo-fuzz targets (fuzz/, its own workspace, nightly), one after the other, FUZZ_SECONDS each.
# The seeds in fuzz/corpus/<target> are only read; what the fuzzer finds goes to fuzz/corpus-work,
# crashes to fuzz/artifacts/<target>.
fuzz: deps-build
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	@rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus-work/$$t && \
	  $(CARGO) +nightly fuzz run $$t corpus-work/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
