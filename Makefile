# Developer entry points for ktransform. `make` or `make help` lists the targets.
#
# To add a target: put it in the section it belongs to (or a new `##@ Section` line),
# declare it in .PHONY, and end its rule line with `## one-line description` so that
# `make help` lists it.

.DEFAULT_GOAL := help

KAFKA_SH := scripts/kafka.sh

.PHONY: help up down logs broker-status demo build test lint chaos bench-transform bench bench-sizes memory-sweep latency-sweep scale-test rebalance-bench rolling-bench soak

##@ General

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } \
	  /^##@ / { printf "\n%s\n", substr($$0, 5) } \
	  /^[a-zA-Z0-9_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

##@ The job

demo: ## Broker + generator + transformer, the group's live view on http://127.0.0.1:8080/, its lag and verdict every 5 s for 30 s; then stop
	bash scripts/demo.sh

build: ## Build the release binary and the generator
	cargo build --release --bin ktransform --example generate

##@ Tests

test: up k8s-tools browser-tools ## Start the broker if needed, then run every test (unit + integration against it)
	@rm -f target/fault-figures.txt
	cargo test
	@echo "fault suite figures (target/fault-figures.txt):"; cat target/fault-figures.txt 2>/dev/null || true

lint: ## rustfmt and clippy, as CI runs them
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

.PHONY: k8s-tools k8s-check browser-tools
k8s-tools: ## Install the Kubernetes validator (kubernetes-validate, PyPI) that tests/deploy.rs needs, if missing
	@python3 -c 'import kubernetes_validate' 2>/dev/null \
	  || python3 -m pip install --quiet kubernetes-validate==1.37.0 \
	  || python3 -m pip install --quiet --user --break-system-packages kubernetes-validate==1.37.0

browser-tools: ## Install headless Chromium (Debian's chromium) that tests/live_view.rs drives, if missing
	@test -x /usr/bin/chromium \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { [ "$$CI" != true ] && echo "chromium not installed (apt-get needs root): tests/live_view.rs skips its browser checks"; }

k8s-check: k8s-tools ## Check deploy/kubernetes/ offline: schemas, KEDA's fields, ktransform's own configuration check
	cargo build --bin ktransform
	python3 deploy/kubernetes/check.py --ktransform target/debug/ktransform --self-test

chaos: up ## Long fault soak (KTRANSFORM_CHAOS=1; about 11 min after the build): kills, broker restarts, 3-node cluster, rebalance storms, poison, fuzzing
	@rm -f target/fault-figures.txt
	KTRANSFORM_CHAOS=1 cargo test --no-fail-fast --test faults --test transform_props -- --nocapture --include-ignored
	@echo "fault suite figures (target/fault-figures.txt):"; cat target/fault-figures.txt 2>/dev/null || true

##@ Benchmarks

bench-transform: ## The transform alone (criterion, no broker): records/s for 50 B and 1 KB records
	cargo bench --bench transform

bench: ## Raw copy, ktransform, Python and Kafka Streams on the local broker -> bench/results/<date>.md (BENCH_ARGS="--quick")
	python3 bench/run.py $(BENCH_ARGS)

bench-sizes: ## Drain rates and CPU per core for 50 B, 1 KB and 10 KB records: raw copy, ktransform, Kafka Streams -> bench/results/<date>-sizes.md (SIZES_ARGS=...)
	python3 bench/sizes.py $(SIZES_ARGS)

memory-sweep: build ## Peak RSS and drain rate per partition count (12, 128, 512; 3M records each, 2 rounds) of this build -> bench/results/<date>-memory-sweep.md (MEMORY_ARGS=... e.g. a second --contender)
	python3 bench/ab.py --partitions 12,128,512 --records 3000000 --rounds 2 --name $$(date +%F)-memory-sweep \
	  --contender 'ktransform=target/release/ktransform run --brokers {brokers} --source {source} --destination {dest} --group {group} --until-end --metrics-addr none' $(MEMORY_ARGS)

latency-sweep: ## Latency over load, raw copy against ktransform -> bench/results/<date>-latency-sweep.* (SWEEP_ARGS=...)
	python3 bench/latency.py $(SWEEP_ARGS)

scale-test: ## Scale-out with a CPU budget per instance (0.1 core, cgroups; shared cores where not writable): partitions x instances, and whether `ktransform lag`'s advice holds -> bench/results/<date>-scale* (SCALE_ARGS=...)
	python3 bench/scale.py $(SCALE_ARGS)

rebalance-bench: ## What a hand-off costs per group protocol: joins, SIGTERM leaves, a SIGKILL under a live producer -> bench/results/<date>-rebalance.* (REBALANCE_ARGS=...)
	python3 bench/rebalance.py $(REBALANCE_ARGS)

rolling-bench: ## A rolling restart of 3 instances under a live producer, with and without --instance-id, per group protocol -> bench/results/<date>-rolling.* (ROLLING_ARGS=...)
	python3 bench/rolling.py $(ROLLING_ARGS)

soak: ## 30 min (~40 in all) at half the measured drain rate with a kill, a broker restart, a scale-out and -in every 3 min; verify, RSS/CPU flatness, replays, stalls -> bench/results/<date>-soak.* (SOAK_ARGS=...; not in CI)
	python3 bench/soak.py $(SOAK_ARGS)

##@ Local Kafka broker (127.0.0.1:9092, see scripts/kafka.sh for settings)

up: ## Start a single-node Kafka with empty storage (first run downloads jars)
	bash $(KAFKA_SH) up

down: ## Stop the Kafka broker
	bash $(KAFKA_SH) down

logs: ## Show the end of the broker log (make logs FOLLOW=1 to follow it)
	bash $(KAFKA_SH) logs $(if $(FOLLOW),-f)

broker-status: ## Exit 0 if the broker runs and serves clients
	@bash $(KAFKA_SH) status
