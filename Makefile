# MooVitamix warehouse. `make` alone prints this menu; every target bootstraps .venv first.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark
# The engine (MOOVITAMIX_ENGINE from the environment, else from .env, or from the file
# MOOVITAMIX_ENV_FILE names: none if it is set but empty): on `spark`, the targets that run the
# pipeline pull the Spark extras into .venv on first use.
NAMED_ENV := $(strip $(MOOVITAMIX_ENV_FILE))
ENV_FILE := $(if $(filter undefined,$(origin MOOVITAMIX_ENV_FILE)),$(ROOT)/.env,$(if $(NAMED_ENV),$(if $(filter /%,$(NAMED_ENV)),$(NAMED_ENV),$(ROOT)/$(NAMED_ENV)),/dev/null))
ENGINE := $(or $(MOOVITAMIX_ENGINE),$(shell sed -n 's/^[[:space:]]*MOOVITAMIX_ENGINE[[:space:]]*=[[:space:]]*//p' $(ENV_FILE) 2>/dev/null | tail -1))
ENGINE_DEPS := $(STAMP) $(if $(filter spark,$(ENGINE)),$(SPARK_STAMP))
# The interpreter that builds .venv: the newest python3.x >= 3.11 found, unless given.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
ARGS ?=

export RUNTIME__DLTHUB_TELEMETRY := false
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help venv spark-venv deps daily test lint unit mutation-check ingest transform validate train evaluate report docs simulator \
	serve psql warehouse-stop warehouse-status bench lock clean

help: ## show this menu
	@echo "MooVitamix warehouse: make <target>"
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): $(ROOT)/requirements.lock
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	echo "bootstrapping .venv with $(PYTHON) (first run only, ~2 min)"
	# an existing .venv keeps its interpreter: a venv re-made by another Python breaks its stdlib
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(ROOT)/requirements.lock
	# the repo root on the venv's path: the project's packages import from anywhere, no build step
	echo "$(ROOT)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/moovitamix-repo.pth"
	touch $(STAMP)

venv: $(STAMP) ## create .venv from requirements.lock (done by every target on first use)

$(SPARK_STAMP): $(STAMP) $(ROOT)/requirements-spark.lock
	@echo "installing the Spark engine's packages into .venv (first use only, ~1 min, ~500 MB)"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(ROOT)/requirements-spark.lock
	command -v java >/dev/null 2>&1 || echo "warning: no java on PATH: the Spark engine needs Java 17+"
	touch $(SPARK_STAMP)

spark-venv: $(SPARK_STAMP) ## add the Spark engine's packages to .venv (done on first use of MOOVITAMIX_ENGINE=spark)

daily: $(ENGINE_DEPS) ## the whole daily run; exit 0 only if every step passed (cron: bin/daily)
	@cd $(ROOT) && $(PY) -m orchestrator $(ARGS)

deps: $(ENGINE_DEPS) ## install what the configured engine needs (.venv; on spark its packages too)

test: lint unit ## the test command: lint, unit and integration tests (what CI runs)

lint: $(STAMP) ## ruff on all Python code
	@cd $(ROOT) && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check --quiet . || \
		{ echo "lint failed: run '$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .'"; exit 1; }

unit: $(STAMP) $(SPARK_STAMP) ## pytest only (ARGS="-k name" to select)
	@cd $(ROOT)
	# pytest's exit 5 means it collected no test: a failure here, said plainly.
	$(PY) -m pytest $(ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "error: pytest collected no tests"; exit $$rc; }

mutation-check: $(STAMP) ## deliberate breakages of the key logic, in a copy: each must fail a test (tests/mutations.py)
	@cd $(ROOT) && $(PY) -m tests.mutations $(ARGS)

ingest: $(ENGINE_DEPS) ## load the API into schema raw (dlt)
	@cd $(ROOT) && $(PY) -m ingestion $(ARGS)

transform: $(ENGINE_DEPS) ## dbt build of staging and marts in one process; table of models, rows, seconds
	@cd $(ROOT) && $(PY) -m dbt_project build $(ARGS)

docs: $(ENGINE_DEPS) ## dbt docs generate, then serve the site on http://127.0.0.1:8080 (GX data docs path printed)
	@cd $(ROOT) && $(PY) -m expectations docs || true
	$(PY) -m dbt_project docs --serve --host 127.0.0.1 --port 8080 $(ARGS)

validate: $(ENGINE_DEPS) ## run the Great Expectations suites (one checkpoint); exit 1 on an error expectation
	@cd $(ROOT) && $(PY) -m expectations validate $(ARGS)

train: $(ENGINE_DEPS) ## train, select and publish recommendations (ARGS="-o model.factors=128")
	@cd $(ROOT) && $(PY) -m ml train $(ARGS)

evaluate: $(ENGINE_DEPS) ## ALS vs the popularity baselines on today's holdout; writes nothing
	@cd $(ROOT) && $(PY) -m ml evaluate $(ARGS)

report: $(STAMP) ## write the health report, reports/health.html
	@cd $(ROOT) && $(PY) -m expectations report $(ARGS)

simulator: $(STAMP) ## serve the API simulator in the foreground (ARGS="--port 8000 --seed 1 ...")
	@cd $(ROOT) && $(PY) -m simulator $(if $(ARGS),$(ARGS),--port 8000)

serve: $(STAMP) ## the recommendations API on 127.0.0.1 (ARGS="--port 8081 --workers 2"; SERVING_TOKENS)
	@cd $(ROOT) && $(PY) -m serving $(ARGS)

psql: $(STAMP) ## a psql shell on the warehouse (starts the embedded one if needed)
	@cd $(ROOT) && $(PY) -m moovitamix warehouse psql $(ARGS)

.PHONY: analyst-psql
analyst-psql: $(STAMP) ## psql as the project's analyst login (no raw, no PII, no writes; SET ROLE gives nothing more)
	@cd $(ROOT) && $(PY) -m moovitamix warehouse --role mvx_analyst psql $(ARGS)

.PHONY: add-login remove-login logins rotate-credentials
add-login: $(STAMP) ## a person's login (ARGS="--name alice --role mvx_analyst [--password-stdin | --no-password]")
	@cd $(ROOT) && $(PY) -m moovitamix login add $(ARGS)

remove-login: $(STAMP) ## drop a person's login (ARGS="--name alice")
	@cd $(ROOT) && $(PY) -m moovitamix login remove $(ARGS)

logins: $(STAMP) ## who logs in to the warehouse, and with which roles
	@cd $(ROOT) && $(PY) -m moovitamix login list $(ARGS)

rotate-credentials: $(STAMP) ## new passwords for the project's logins (waits for a running daily run)
	@cd $(ROOT) && $(PY) -m moovitamix login rotate $(ARGS)

.PHONY: forget-user erasure-report
forget-user: $(STAMP) ## erase a user everywhere, now (ARGS="--user-id 123 --reason ticket-987")
	@cd $(ROOT) && $(PY) -m privacy forget $(ARGS)

erasure-report: $(STAMP) ## the erasure audit: per request, hashed subject, times, rows per store, role
	@cd $(ROOT) && $(PY) -m privacy report $(ARGS)

.PHONY: print-admin-sql
print-admin-sql: $(STAMP) ## the SQL an administrator runs once when the warehouse user is no superuser
	@cd $(ROOT) && $(PY) -m moovitamix warehouse admin-sql

warehouse-status: $(STAMP) ## is the warehouse up, and which one is in use
	@cd $(ROOT) && $(PY) -m moovitamix warehouse status

warehouse-stop: $(STAMP) ## stop the embedded Postgres (it is left running between steps)
	@cd $(ROOT) && $(PY) -m moovitamix warehouse stop

bench: $(STAMP) ## the benchmarks under bench/, results in bench/results/
	@cd $(ROOT) && for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b $(ARGS); done

lock: ## re-resolve requirements.txt into requirements.lock (needs the package index)
	rm -rf $(ROOT)/.lockvenv && $(PYTHON) -m venv $(ROOT)/.lockvenv
	$(ROOT)/.lockvenv/bin/pip install --quiet -r $(ROOT)/requirements.txt
	{ echo "# Generated by 'make lock' from requirements.txt: the exact set 'make' installs into .venv."; \
	  $(ROOT)/.lockvenv/bin/pip freeze; } > $(ROOT)/requirements.lock
	rm -rf $(ROOT)/.lockvenv

clean: ## remove generated files (keeps .venv and the warehouse data in .data)
	@cd $(ROOT) && rm -rf logs reports dbt_project/target dbt_project/logs .pytest_cache .ruff_cache
