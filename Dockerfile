# One image for every service of Microservices Lab; the command picks the service:
#   docker run microlab python -m services.orders
# docker-compose.yml (generated from microlab/topology.toml) runs one container per service.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The requirements layer comes before the code, so changing code does not reinstall packages.
# A wheelhouse/ folder beside the Dockerfile (filled by `pip download`) is used when present;
# PIP_NO_INDEX=1 then installs from it alone, with no network (as `make compose-test` does).
ARG PIP_NO_INDEX=
COPY requirements.txt wheelhouse* /tmp/requirements/
RUN python3 -m venv /opt/venv \
    && PIP_NO_INDEX=${PIP_NO_INDEX} pip install --find-links /tmp/requirements \
           -r /tmp/requirements/requirements.txt \
    && rm -rf /tmp/requirements

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin microlab
WORKDIR /app
COPY --chown=microlab:microlab . /app
USER microlab

# The same gunicorn settings as local mode (patterns/serve.py: gthread, 1 worker, THREADS).
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=5 \
    CMD python -m microlab.healthcheck
CMD ["python", "-m", "services.gateway"]
