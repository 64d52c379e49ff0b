# badge-service. `make run` and `make test` install what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
BUF    := node_modules/.bin/buf
# The 1EdTech Open Badges validator, in a venv of its own (tests/validator/requirements.txt).
VALIDATOR := .venv-validator
VALIDATOR_STAMP := $(VALIDATOR)/.installed

.PHONY: run install dev validator pg-tools test protos docs lint fmt buf-lint bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

$(BUF): package.json package-lock.json
	# npm ci refuses buf's lock: buf lists platform packages of its own version that the
	# registry lacks for some platforms. npm install keeps to the lock and skips them.
	npm install --no-audit --no-fund --loglevel=error
	touch $@

$(VALIDATOR_STAMP): tests/validator/requirements.txt
	$(PYTHON) -m venv $(VALIDATOR)
	# --no-deps: its own pins cannot all be installed on Python 3.11 (see the requirements).
	$(VALIDATOR)/bin/pip install -q --no-deps openbadges==1.1.2
	$(VALIDATOR)/bin/pip install -q -r tests/validator/requirements.txt
	touch $@

## The PostgreSQL tests' own tools that do not come with PostgreSQL: PgBouncer
## (tests/test_pgbouncer.py starts one), from Debian's packages when it is missing (as root).
pg-tools:
	@if command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer; then :; else \
	  apt-get install -y -q pgbouncer || { apt-get update -q && apt-get install -y -q pgbouncer; }; \
	fi

install: $(RUN_STAMP)
validator: $(VALIDATOR_STAMP)
dev: $(DEV_STAMP) $(BUF) $(VALIDATOR_STAMP)

## Serve gRPC on 127.0.0.1:50051 and HTTP on 127.0.0.1:8080 with ./badges.db (migrated at start). Flags and BADGE_SERVICE_* env
## change the address and database URL; see README.
run: $(RUN_STAMP)
	$(BIN)/badge-service serve --http-address 127.0.0.1:8080 $(ARGS)

## The whole suite: SQLite always, PostgreSQL when BADGE_SERVICE_TEST_PG_URL is set. On every
## core (pytest-xdist), a test file per worker so that its module-scoped servers stay whole;
## each worker has its own session databases.
test: dev
	$(BIN)/pytest -n auto --dist loadfile $(PYTEST_ARGS)

## Regenerate src/badge_service/api from protos/ (committed; a test fails when stale).
protos: $(DEV_STAMP)
	$(BIN)/python tools/gen_protos.py

## Regenerate docs/rest-mapping.md and docs/openapi.json from the google.api.http annotations.
docs: $(DEV_STAMP)
	$(BIN)/python tools/gen_rest_mapping.py
	$(BIN)/python tools/gen_openapi.py

buf-lint: $(BUF)
	$(BUF) lint

lint: dev
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BUF) lint

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests tools bench
	$(BIN)/ruff format src tests tools bench

## The benchmark (not part of `make test`): the service against a bare grpc.aio baseline, with
## h2load; seeds 1.1M badges and takes about ten minutes. Writes bench/results/latest.md.
## BENCH_ARGS="--pg postgresql+asyncpg://..." benchmarks PostgreSQL instead of SQLite, and writes
## bench/results/latest-pg.md.
bench: $(RUN_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## The same harness on tiny data with 1-second runs (CI runs it so the harness cannot rot).
bench-smoke: $(RUN_STAMP)
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VALIDATOR) node_modules .pytest_cache .mypy_cache .ruff_cache badges.db badges.db-*
