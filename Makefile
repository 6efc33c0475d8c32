# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8099
DASHBOARD_PORT ?= 8098
# Where `make run` keeps its jobs across restarts (`make clean-state` forgets them).
STATE_DIR ?= .state
# Upstream engines, space-separated NAME=HOST:PORT (e.g. ENGINES="flink=10.0.3.4:8099"), and
# the REST APIs of the Flink clusters behind those that are Beam's Flink job server, the same way.
ENGINES ?=
FLINK_REST ?=
STAMP := $(VENV)/.installed
# Editable installs write the project's own egg-info: one at a time, even under make -j.
EDITABLE := flock .editable-install.lock

# The workers' own environment: what Beam's Python SDK image has (worker/requirements.txt).
WORKER_VENV := .venv-worker
WORKER_STAMP := $(WORKER_VENV)/.installed
WORKER_PYTHON := $(abspath $(WORKER_VENV))/bin/python
# Keep equal to pyproject.toml's `worker` extra (the SDK the tests submit with).
BEAM_VERSION := 2.77.0

# The Beam TypeScript SDK, from npm, as a client of the end-to-end tests.
TS_CLIENT := tests/e2e/typescript
TS_STAMP := $(TS_CLIENT)/node_modules/.installed

# A Java pipeline, as Beam's Java SDK users write one (Beam 2.65.0, the newest whose PortableRunner
# Maven Central serves here whole), a client of the end-to-end tests: compiled with its classpath
# copied beside it (--strict-checksums refuses a jar whose published checksum differs).
JAVA_CLIENT := tests/e2e/java
JAVA_BEAM_VERSION := 2.65.0
# The oldest Beam release the e2e tests submit with (its Python SDK image's stand-in is built
# ahead, pinned by layers/beamjobs/worker/image_pins).
STAND_IN_BEAM := 2.50.0
# Beam SQL's expansion service (unshaded, with a registrar of the test's own: tests/e2e/sql), for
# a Python pipeline's SqlTransform.
SQL_EXPANSION := tests/e2e/sql
SQL_STAMP := $(SQL_EXPANSION)/target/.built
JAVA_STAMP := $(JAVA_CLIENT)/target/.built

# Beam's Prism runner, the built-in `prism` engine: built from Beam's Go module at the worker's
# release into the clone's cache (the Go module proxy's checksum database verifies every module
# it downloads).
ENGINES_CACHE := .cache/engines
PRISM := $(ENGINES_CACHE)/bin/prism

# A Go pipeline on Beam's Go SDK (at the worker's release, from the Go module proxy, checked
# against go.sum), a client of the end-to-end tests.
GO_CLIENT := tests/e2e/go
GO_WORDCOUNT := $(ENGINES_CACHE)/bin/go-wordcount

# Beam's Python boot (the SDK image's entry point, Go's `container` command), with which Prism
# runs EMBEDDED Python environments as PROCESS ones.
PYTHON_BOOT := $(ENGINES_CACHE)/python-boot/container
GO ?= $(or $(shell command -v go),/usr/local/go/bin/go)
# Real Flink and Spark clusters, each behind Beam's own job server, for the e2e tests and for
# `make flink` / `make spark`: the distributions from PyPI (engines/distributions.txt, pinned by
# hash), the job servers' classpaths from Maven Central (engines/*/pom.xml; --strict-checksums
# refuses a jar whose published checksum differs).
CLUSTERS := $(ENGINES_CACHE)/flink/.installed $(ENGINES_CACHE)/spark/.installed \
	$(ENGINES_CACHE)/flink-job-server/.installed $(ENGINES_CACHE)/spark-job-server/.installed
DOWNLOADS := $(ENGINES_CACHE)/downloads
MVN ?= mvn

# The dashboard's graph layout: dagre (MIT), npm's package, checked against the sha512 the
# registry publishes for it; its browser build lands among the dashboard's static files.
DAGRE_VERSION := 3.1.4
DAGRE_SHA512 := b56ddfb2f5f14ad786a411e04ff86a3f10714e26cfc38d3d987f7b4ba2f35def9d75a936fd1b4fb589183e8e607efcc1b678f1ad99e887c7edeb6cc0dcb0c065
DAGRE_TARBALL := $(DOWNLOADS)/dagre-$(DAGRE_VERSION).tgz
DAGRE := layers/beamjobs/dashboard/static/vendor/dagre.min.js

SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
SAM_CLI_VERSION := 1.170.0

.PHONY: run clean-state flink spark setup engines stand-ins chromium test test-control-plane test-e2e fuzz lint proto bench clean sam-validate worker-lock stand-in-pins

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(EDITABLE) $(BIN)/pip install --quiet -e '.[shim,local,worker,dev]'
	touch $(STAMP)

## The workers' virtualenv: the SDK image's distributions, pinned, plus Beamjobs itself
## constrained to them (so nothing of the image's changes version).
$(WORKER_STAMP): worker/requirements.txt pyproject.toml
	test -x $(WORKER_VENV)/bin/python || $(PYTHON) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/pip install --quiet --upgrade pip \
		$$(PYTHONPATH=layers $(PYTHON) -m beamjobs.worker.image_environments tools)
	$(WORKER_VENV)/bin/pip install --quiet -r worker/requirements.txt
	$(EDITABLE) $(WORKER_VENV)/bin/pip install --quiet -c worker/requirements.txt -e .
	touch $(WORKER_STAMP)

## Everything the tests need (`make -j4 setup` builds the environments side by side).
setup: $(STAMP) $(WORKER_STAMP) $(DAGRE) $(TS_STAMP) $(JAVA_STAMP) $(SQL_STAMP) $(GO_WORDCOUNT) $(SAM_STAMP) stand-ins engines

$(GO_WORDCOUNT): $(GO_CLIENT)/go.mod $(GO_CLIENT)/go.sum $(GO_CLIENT)/main.go
	cd $(GO_CLIENT) && GOMODCACHE=$(abspath $(ENGINES_CACHE))/gomod GOFLAGS=-modcacherw \
		$(GO) build -o $(abspath $@) .

$(SQL_STAMP): $(SQL_EXPANSION)/pom.xml $(shell find $(SQL_EXPANSION)/src -type f)
	cd $(SQL_EXPANSION) && $(MVN) --quiet --batch-mode --strict-checksums clean package
	touch $@

$(JAVA_STAMP): $(JAVA_CLIENT)/pom.xml $(shell find $(JAVA_CLIENT)/src -name '*.java')
	cd $(JAVA_CLIENT) && $(MVN) --quiet --batch-mode --strict-checksums clean package
	touch $@

## The engines Beamjobs runs jobs on besides its own: Beam's Prism runner, and the Flink and
## Spark clusters with their job servers.
engines: $(PRISM) $(PYTHON_BOOT) $(CLUSTERS)

$(PRISM):
	GOBIN=$(abspath $(ENGINES_CACHE))/bin GOMODCACHE=$(abspath $(ENGINES_CACHE))/gomod GOFLAGS=-modcacherw \
		$(GO) install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)

$(PYTHON_BOOT):
	GOBIN=$(abspath $(@D)) GOMODCACHE=$(abspath $(ENGINES_CACHE))/gomod GOFLAGS=-modcacherw \
		$(GO) install github.com/apache/beam/sdks/v2/python/container@v$(BEAM_VERSION)

$(DOWNLOADS)/.installed: engines/distributions.txt $(STAMP)
	$(BIN)/pip download --quiet --no-deps --require-hashes -r engines/distributions.txt -d $(DOWNLOADS)
	touch $@

## A distribution's jars and scripts, out of its sdist (the rest is PyFlink's and PySpark's).
$(ENGINES_CACHE)/flink/.installed: $(DOWNLOADS)/.installed
	rm -rf $(@D) && mkdir -p $(@D)
	tar -xzf $(DOWNLOADS)/apache-flink-libraries-*.tar.gz -C $(@D) --strip-components=2 \
		--wildcards '*/deps/lib' '*/deps/bin'
	touch $@

$(ENGINES_CACHE)/spark/.installed: $(DOWNLOADS)/.installed
	rm -rf $(@D) && mkdir -p $(@D)
	tar -xzf $(DOWNLOADS)/pyspark-*.tar.gz -C $(@D) --strip-components=2 \
		--wildcards '*/deps/jars' '*/deps/bin'
	touch $@

$(ENGINES_CACHE)/%-job-server/.installed: engines/%/pom.xml
	rm -rf $(@D)
	$(MVN) --quiet --batch-mode --strict-checksums -f $< dependency:copy-dependencies \
		-DoutputDirectory=$(abspath $(@D))
	touch $@

## A Flink cluster (a JobManager and a TaskManager) and Beam's Flink job server on
## localhost:$(FLINK_JOB_PORT) (Flink's REST API and UI on :$(FLINK_REST_PORT)), until Ctrl-C; it says how `make run` then serves Beamjobs with it.
FLINK_JOB_PORT ?= 8097
FLINK_REST_PORT ?= 8081
flink: $(STAMP) $(CLUSTERS)
	$(BIN)/python -m engines.clusters flink --job-port $(FLINK_JOB_PORT) --flink-rest-port $(FLINK_REST_PORT)

## The same with a Spark standalone master and worker, and Beam's Spark job server.
SPARK_JOB_PORT ?= 8096
spark: $(STAMP) $(CLUSTERS)
	$(BIN)/python -m engines.clusters spark --job-port $(SPARK_JOB_PORT)

## The stand-ins of Beam 2.50's Python SDK image and of the Java SDK image of the Java client's
## release, that the e2e tests' DOCKER jobs run in (they take minutes to build): built ahead, into
## the cache the tests' workers use, as a worker builds them. At once when they are there already.
stand-ins:
	PYTHONPATH=layers $(PYTHON) -m beamjobs.worker.image_environments build \
		apache/beam_python3.11_sdk:$(STAND_IN_BEAM) .cache/environments
	PYTHONPATH=layers $(PYTHON) -m beamjobs.worker.image_environments build \
		apache/beam_java17_sdk:$(JAVA_BEAM_VERSION) .cache/environments

## Serve the Job API on localhost:$(PORT), and the dashboard on http://localhost:$(DASHBOARD_PORT),
## with the embedded AWS and the local executor.
run: $(STAMP) $(WORKER_STAMP) $(PRISM) $(PYTHON_BOOT) $(DAGRE)
	$(BIN)/beamjobs serve --port $(PORT) --dashboard-port $(DASHBOARD_PORT) --template template.yaml \
		--state-dir $(STATE_DIR) \
		--worker-python $(WORKER_PYTHON) --prism $(PRISM) --python-boot $(PYTHON_BOOT) \
		$(foreach engine,$(ENGINES),--engine $(engine)) \
		$(foreach rest,$(FLINK_REST),--flink-rest $(rest))

## Forget every job `make run` kept (its state directory).
clean-state:
	rm -rf $(STATE_DIR)

## Re-pin worker/requirements.txt: resolve what the SDK image of $(BEAM_VERSION) installs.
worker-lock: $(STAMP)
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet \
		$$($(BIN)/python -m beamjobs.worker.image_environments requirements $(BEAM_VERSION))
	{ sed -n '/^#/p' worker/requirements.txt; .venv-lock/bin/pip freeze; } > worker/requirements.new
	mv worker/requirements.new worker/requirements.txt && rm -rf .venv-lock

## Re-pin the stand-in of Beam $(STAND_IN_BEAM)'s Python SDK image: resolve what it installs afresh.
STAND_IN_PINS := layers/beamjobs/worker/image_pins/python3.11-beam$(STAND_IN_BEAM).txt
stand-in-pins: $(STAMP)
	rm -rf .venv-pins && python3.11 -m venv .venv-pins
	.venv-pins/bin/pip install --quiet \
		$$($(BIN)/python -m beamjobs.worker.image_environments requirements $(STAND_IN_BEAM)) \
		$$($(BIN)/python -m beamjobs.worker.image_environments tools)
	{ sed -n '/^#/p' $(STAND_IN_PINS); .venv-pins/bin/pip freeze; } > $(STAND_IN_PINS).new
	mv $(STAND_IN_PINS).new $(STAND_IN_PINS) && rm -rf .venv-pins

## Unit, integration, fault, abuse and end-to-end tests. The Beam SDK and our wire classes
## declare the same protobuf names, so the suites that import apache_beam run in their own
## interpreter. The two interpreters run side by side (most of either's time is spent waiting
## on processes, sockets and clocks); each one's output is shown whole when it ends.
test: $(STAMP) $(WORKER_STAMP) $(DAGRE) $(TS_STAMP) $(JAVA_STAMP) $(SQL_STAMP) $(GO_WORDCOUNT) $(PRISM) $(PYTHON_BOOT) $(CLUSTERS) stand-ins sam-validate chromium
	$(MAKE) --no-print-directory -j2 --output-sync=target test-control-plane test-e2e

test-control-plane: $(STAMP) $(WORKER_STAMP)
	$(BIN)/pytest tests/unit tests/integration tests/faults tests/abuse

## The end-to-end and browser tests (both submit with the Beam SDK). Screenshots of the pages
## land in build/screenshots.
test-e2e: $(STAMP) $(WORKER_STAMP) $(DAGRE) $(TS_STAMP) $(JAVA_STAMP) $(SQL_STAMP) $(GO_WORDCOUNT) $(PRISM) $(PYTHON_BOOT) $(CLUSTERS) stand-ins chromium
	$(BIN)/pytest tests/e2e tests/browser

$(DAGRE_TARBALL):
	mkdir -p $(dir $@)
	$(PYTHON) -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' \
		https://registry.npmjs.org/@dagrejs/dagre/-/dagre-$(DAGRE_VERSION).tgz $@.part
	echo "$(DAGRE_SHA512)  $@.part" | sha512sum --check --quiet
	mv $@.part $@

$(DAGRE): $(DAGRE_TARBALL)
	mkdir -p $(dir $@)
	tar -xzOf $< package/LICENSE > $(dir $@)dagre.LICENSE
	tar -xzOf $< package/dist/dagre.min.js > $@

## Debian's Chromium, which the browser tests drive (Playwright never downloads one here).
chromium:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

## The abuse suite's generated requests, ten times CI's budget.
fuzz: $(STAMP) $(WORKER_STAMP)
	BEAMJOBS_FUZZ_EXAMPLES=100000 $(BIN)/pytest tests/abuse/test_fuzz.py

$(TS_STAMP): $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund --loglevel=error
	touch $(TS_STAMP)

## `sam validate --lint` on template.yaml. The SAM CLI pins its own boto3 and cfn-lint, so it
## lives in a virtualenv of its own.
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $(SAM_STAMP)

sam-validate: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint

lint: $(STAMP)
	$(BIN)/ruff check layers functions tests bench engines
	$(BIN)/ruff format --check layers functions tests bench engines
	$(BIN)/mypy layers functions
	$(BIN)/lint-imports
	$(BIN)/cfn-lint template.yaml

## Regenerate the wire classes from proto/ (a test regenerates into a temporary PROTO_OUT and
## fails when layers/ differs).
PROTO_OUT ?= layers
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) proto/beamjobs/api/*.proto

bench: $(STAMP) $(WORKER_STAMP) $(PRISM)
	BEAMJOBS_WORKER_PYTHON=$(WORKER_PYTHON) $(BIN)/python bench/bench.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/soak.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/listing.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/worker_channel.py
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/warm_pool.py

clean:
	rm -rf $(VENV) $(WORKER_VENV) $(SAM_VENV) .pytest_cache .cache
