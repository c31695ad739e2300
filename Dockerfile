# The Reintegration Orchestrator's image: the API (the default command) and the Temporal worker
# (`python -m worker`), nothing else. Temporal itself runs from Temporal's own images (see
# docker-compose.yml); no Temporal CLI or server is in here.
#
# Reproducible: a pinned base, and every package from requirements.lock with its hashes (pip
# refuses anything else). Build: docker build -t reintegration-orchestrator .
# For a build that can never change, pin the base by digest too: PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# The dependencies first, from the lock alone: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps --requirement requirements.lock
# Then the project itself, built by the locked build backend, without resolving anything again.
COPY requirements-build.lock ./
RUN /opt/venv/bin/pip install --require-hashes --requirement requirements-build.lock
COPY pyproject.toml worker.py ./
COPY reintegration ./reintegration
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REINTEGRATION_DATA_DIR=/data \
    REINTEGRATION_ENVIRONMENT=production \
    REINTEGRATION_API_HOST=0.0.0.0
# An unprivileged user owning /data and /anchors only (named volumes mounted there inherit that
# ownership); the code and its packages belong to root and cannot be changed by the processes.
# Pango and a font for the printable report (WeasyPrint); nothing else from apt.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /data /anchors \
    && chown app:app /data /anchors
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 8000 9464
# `reintegration api`: uvicorn as the settings say, without its own access log (the API logs one
# line per request itself, route template only) and its log lines as the same JSON as the app's.
CMD ["reintegration", "api"]
