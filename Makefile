# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8099
STAMP := $(VENV)/.installed

SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
SAM_CLI_VERSION := 1.170.0

.PHONY: run test test-fast lint proto bench clean sam-validate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[shim,local,worker,dev]'
	touch $(STAMP)

## Serve the Job API on localhost:$(PORT) with the embedded AWS and the local executor.
run: $(STAMP)
	$(BIN)/beamjobs serve --port $(PORT) --template template.yaml

## Unit, integration and end-to-end tests. The Beam SDK and our wire classes declare the same
## protobuf names, so the suites that import apache_beam run in their own interpreter.
test: $(STAMP) sam-validate
	$(BIN)/pytest tests/unit tests/integration
	$(BIN)/pytest tests/e2e

## `sam validate --lint` on template.yaml. The SAM CLI pins its own boto3 and cfn-lint, so it
## lives in a virtualenv of its own.
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $(SAM_STAMP)

sam-validate: $(SAM_STAMP)
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint

lint: $(STAMP)
	$(BIN)/ruff check layers functions tests bench
	$(BIN)/ruff format --check layers functions tests bench
	$(BIN)/mypy layers functions
	$(BIN)/cfn-lint template.yaml

## Regenerate the wire classes from proto/ (a test regenerates into a temporary PROTO_OUT and
## fails when layers/ differs).
PROTO_OUT ?= layers
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) proto/beamjobs/api/*.proto

bench: $(STAMP)
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache
