# One entry point for people and CI: `make demo` runs the pipeline locally, `make test` runs the tests.
# Everything installs itself into the project folder: .venv (Python, via uv) and emulator/node_modules.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# The function's own requirements alone, as a deployed function has them (bench-coldstart times it).
FUNCTION_VENV := .venv-function

.PHONY: test demo send bench backfill install clean lock

install: $(VENV)/.installed emulator/node_modules/.installed

$(VENV)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.lock
	touch $@

emulator/node_modules/.installed: emulator/package.json emulator/package-lock.json
	cd emulator && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Re-resolve the fully pinned lock after changing a requirements file.
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile --quiet requirements-dev.in -o requirements-dev.lock --python-version 3.11

test: install bench/node/node_modules/.installed bench/extension/node_modules/.installed tests/templates/hbs/node_modules/.installed
	@$(MAKE) --no-print-directory lint-workflows
	@tools/ensure-chromium
	@tools/ensure-postfix
	@$(MAKE) --no-print-directory plan-check policy-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-runtime

# The function's side of the suite again on the Python the stacks deploy (mailer:runtime, python312): the
# handler, transport, messages, templates, the MTA tests and the local pipeline, in .venv-runtime (the same
# lock). Without a python3.12 (tools/find-python) it says so in capitals and goes on, unless
# REQUIRE_RUNTIME_PYTHON=1, which makes that an error.
RUNTIME_PYTHON_VERSION := 3.12
RUNTIME_VENV := .venv-runtime
RUNTIME_TESTS ?= tests/function tests/transport tests/message tests/templates tests/mta tests/local
RUNTIME_PYTEST_ARGS ?= -q -ra
.PHONY: test-runtime
test-runtime: install bench/node/node_modules/.installed tests/templates/hbs/node_modules/.installed
	@if py=$$(tools/find-python $(RUNTIME_PYTHON_VERSION)); then \
	  $(MAKE) --no-print-directory RUNTIME_PYTHON=$$py $(RUNTIME_VENV)/.installed && \
	  echo "the function's tests on $$($(RUNTIME_VENV)/bin/python -V) (the deployed runtime): $(RUNTIME_TESTS)" && \
	  $(RUNTIME_VENV)/bin/pytest -p no:cacheprovider $(RUNTIME_PYTEST_ARGS) $(RUNTIME_TESTS); \
	elif [ "$(REQUIRE_RUNTIME_PYTHON)" = 1 ]; then \
	  echo "no python$(RUNTIME_PYTHON_VERSION) here, and REQUIRE_RUNTIME_PYTHON=1" >&2; exit 1; \
	else \
	  echo "NOT TESTED ON PYTHON $(RUNTIME_PYTHON_VERSION), the deployed runtime: no python$(RUNTIME_PYTHON_VERSION) found (see tools/find-python)"; \
	fi

$(RUNTIME_VENV)/.installed: requirements-dev.lock
	@test -n "$(RUNTIME_PYTHON)" || { echo "make test-runtime builds $(RUNTIME_VENV)" >&2; exit 1; }
	rm -rf $(RUNTIME_VENV)
	$(RUNTIME_PYTHON) -m venv $(RUNTIME_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(RUNTIME_VENV)/bin/python -r requirements-dev.lock
	touch $@

# The GitHub workflows and the local action, linted offline; any finding fails: actionlint (ShellCheck on
# every run: script, both from pinned wheels in .venv) and zizmor at medium severity or higher.
.PHONY: lint-workflows
lint-workflows: $(VENV)/.installed
	$(VENV)/bin/actionlint -shellcheck $(VENV)/bin/shellcheck -pyflakes= -oneline $(wildcard .github/workflows/*.yml .github/workflows/*.yaml)
	$(VENV)/bin/zizmor --offline --no-progress --min-severity medium .github

# Reviewing infrastructure offline (README "Reviewing changes"). The policy pack (policy/) and the plan
# (review/) run in their own venv: pulumi-policy pins protobuf below 5.30, the function's Firestore
# client needs 6.x. policy/requirements.txt is its lock (the program's requirements + pulumi-policy).
POLICY_VENV := .venv-policy
POLICY_PY := $(POLICY_VENV)/bin/python
.PHONY: policy-venv policy-lock policy-test plan plan-check plan-update

policy-venv: $(POLICY_VENV)/.installed

$(POLICY_VENV)/.installed: policy/requirements.txt
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(POLICY_VENV)/bin/uv pip install --quiet --python $(POLICY_PY) -r policy/requirements.txt
	touch $@

# Re-resolve policy/requirements.txt after changing policy/requirements.in or requirements.txt.
policy-lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile --quiet policy/requirements.in -o policy/requirements.txt --python-version 3.11

# The policy rules and the plan, tested in the policy venv (conftests above tests/policy need .venv).
policy-test: $(POLICY_VENV)/.installed
	$(POLICY_VENV)/bin/pytest -q --confcutdir=tests/policy -p no:cacheprovider tests/policy

# make plan STACK=dev: the program under Pulumi's mocks, each resource's key properties, the policy results.
plan: $(POLICY_VENV)/.installed
	@$(POLICY_PY) -m review.plan $(if $(STACK),--stack $(STACK)) $(ARGS)

# Every stack's plan against its snapshot in review/plans/ (a diff on change); plan-update rewrites them.
plan-check: $(POLICY_VENV)/.installed
	@$(POLICY_PY) -m review.plan --check

plan-update: $(POLICY_VENV)/.installed
	@$(POLICY_PY) -m review.plan --update

# The pipeline on this machine (emulator, trigger bridge, function, SMTP inbox); see README "Run it locally".
# make demo ARGS=--serve keeps it running; make send ARGS="--to a@example.com --subject Hi --text Hello".
demo: install
	@$(PY) -m local.demo $(ARGS)

send: install
	@$(PY) -m local.send $(ARGS)

# Cost per email and local delivery speed, then retries under load, the sweep's drain rate and idle cost,
# then the function's cold start; prints figures, asserts nothing.
# ARGS="--emails 500 --template", RELIABILITY_ARGS="--emails 1000 --backlog 10000", COLDSTART_ARGS="--runs 9".
bench: install $(FUNCTION_VENV)/.installed bench/extension/node_modules/.installed
	@$(PY) -m bench.pipeline $(ARGS)
	@echo
	@$(PY) -m bench.reliability $(RELIABILITY_ARGS)
	@echo
	@$(PY) -m bench.coldstart --python $(FUNCTION_VENV)/bin/python $(COLDSTART_ARGS)

# Fresh Python process -> the function ready to serve (median of 5), the top -X importtime contributors,
# in a venv of functions/requirements.txt alone (pinned by the lock) on the deployed runtime's Python
# (3.12 when tools/find-python finds it, else $(PYTHON)), as deployed.
.PHONY: bench-coldstart
bench-coldstart: install $(FUNCTION_VENV)/.installed bench/extension/node_modules/.installed
	@$(PY) -m bench.coldstart --python $(FUNCTION_VENV)/bin/python $(ARGS)

$(FUNCTION_VENV)/.installed: functions/requirements.txt requirements-dev.lock $(VENV)/.installed
	rm -rf $(FUNCTION_VENV)
	@py=$$(tools/find-python $(RUNTIME_PYTHON_VERSION) 2>/dev/null) || py=$(PYTHON); echo "$$py -m venv $(FUNCTION_VENV)"; \
	  $$py -m venv $(FUNCTION_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(FUNCTION_VENV)/bin/python -r functions/requirements.txt -c requirements-dev.lock
	touch $@

# The project's SMTP transport against nodemailer 10.x and 8.0.5 pools (bench/node, npm ci'd here) in one
# run: an aiosmtpd sink and a private Postfix behind a latency proxy at 0 and 50 ms RTT; prints figures.
# make bench-smtp ARGS="--messages 500 --repeat 5 --rtt 0,20,50"
.PHONY: bench-smtp
bench-smtp: install bench/node/node_modules/.installed
	@$(PY) -m bench.smtp $(ARGS)

# The anchor of bench-coldstart: what firestore-send-email's lib/index.js loads, at its locked versions.
bench/extension/node_modules/.installed: bench/extension/package.json bench/extension/package-lock.json
	cd bench/extension && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench/node/node_modules/.installed: bench/node/package.json bench/node/package-lock.json
	cd bench/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Handlebars.js at the version firestore-send-email locks, for tests/templates/test_conformance.py.
tests/templates/hbs/node_modules/.installed: tests/templates/hbs/package.json tests/templates/hbs/package-lock.json
	cd tests/templates/hbs && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Hand mail documents that have no `delivery` (written before the first deploy, or while the trigger was
# missing) to the sweep. A dry run unless ARGS has --apply; see README "Operations: backfill".
# make backfill ARGS="--project my-project [--apply]"
backfill: $(VENV)/.installed
	@$(PY) -m ops.backfill $(ARGS)

# Issue 12: a stack file (and templates/*.yaml) from an installed extension's `firebase ext:export` file or a
# Logto SMTP connector JSON, or templates/*.yaml from the extension's templates collection. A dry run (a diff)
# unless ARGS has --write; see README "Migrating from the extension".
# make import-config ARGS="extension extensions/firestore-send-email.env --stack prod --project my-project [--write]"
# make import-config ARGS="logto connector.json --stack prod --project my-project --region us-central1 --firestore-location nam5"
# make import-config ARGS="templates --project my-project --collection email-templates [--write]"
.PHONY: import-config
import-config: $(VENV)/.installed
	@$(PY) -m ops.import_config $(ARGS)

# Connect to a stack's SMTP server as the function would and print each step (DNS, TCP, TLS and the
# certificate, EHLO capabilities, AUTH, with --send-to a test message) and the likely cause of a failure.
# The password comes from --password-stdin or SMTP_PASSWORD, never from the stack file (it is encrypted);
# see README "Checking a stack's SMTP settings: make check".
# pulumi config get mailer:smtpPassword --stack prod | make check STACK=prod ARGS="--password-stdin --send-to you@example.com"
.PHONY: check
check: $(VENV)/.installed
	@$(PY) -m ops.check $(if $(STACK),--stack $(STACK)) $(ARGS)

clean:
	rm -rf $(VENV) $(POLICY_VENV) $(FUNCTION_VENV) $(RUNTIME_VENV) emulator/node_modules bench/node/node_modules bench/extension/node_modules tests/templates/hbs/node_modules .pytest_cache .demo
