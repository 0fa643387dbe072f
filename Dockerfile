# The step image shared by preprocess, train, building and evaluate: PyTorch (CPU), transformers,
# ONNX / ONNX Runtime, MLflow, the Docker SDK, tritonclient and the shared `sentclf` package.
# Build it with `make images` (it fills .build/inputs and passes BASE_IMAGE).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# STEP_LOCK=false resolves step.txt afresh, ignoring requirements/step.lock: only `make step-lock` does that.
ARG STEP_LOCK=true
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
# Optional build inputs: ca.crt (a TLS proxy's CA; empty when none) and wheels/ (the CPU torch wheel).
COPY .build/inputs/ /tmp/build-inputs/
# Only the step's own requirements: the host's (host.txt, dev.txt) must not rebuild a 2 GB environment.
COPY requirements/torch.txt requirements/step.txt requirements/step.lock /tmp/requirements/
# step.lock as constraints: every transitive dependency at the version the lock names, so a rebuild
# months later installs the same environment the figures in the README were measured with.
RUN set -e; \
    if [ -s /tmp/build-inputs/ca.crt ]; then export PIP_CERT=/tmp/build-inputs/ca.crt; fi; \
    constraints=""; \
    if [ "$STEP_LOCK" = true ]; then constraints="--constraint /tmp/requirements/step.lock"; fi; \
    /opt/venv/bin/pip install $constraints --find-links /tmp/build-inputs/wheels \
        -r /tmp/requirements/torch.txt; \
    /opt/venv/bin/pip install $constraints -r /tmp/requirements/step.txt

FROM ${BASE_IMAGE}
COPY --from=builder /opt/venv /opt/venv
# The shared package last and as plain source on PYTHONPATH: a change to it rebuilds only this small
# layer, not the 2 GB environment above.
COPY sentclf/ /opt/sentclf/sentclf/
# The model's runtime (the pyfunc's and the server's scorer) and the inference server's sources: the building
# step puts both into each server image's build context.
COPY sentclf_runtime/ /opt/sentclf/sentclf_runtime/
COPY server/ /opt/sentclf/server/
# A step that is its container's PID 1 exits on SIGTERM even before it has set up its own handler.
COPY sentclf/_pid1.py /opt/sentclf/sitecustomize.py
# The building step hands this CA to the server image's builder stage (pip behind a TLS proxy);
# it is never copied into a server image. Empty when the host has none.
COPY .build/inputs/ca.crt /etc/sentclf/build-ca.crt
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/sentclf PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg GIT_PYTHON_REFRESH=quiet \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
# MLflow runs the step's command here with the step's directory mounted (see each MLproject).
WORKDIR /mlflow/projects/code
# The checkout this image was built for (sentclf.images.checkout_id): the steps label what they start
# with it, so one clone's leftover checks never count another's. Last, so clones share every layer above.
ARG SENTCLF_CHECKOUT=""
ENV SENTCLF_CHECKOUT=${SENTCLF_CHECKOUT}
