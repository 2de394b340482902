# syntax=docker/dockerfile:1
# warroom — ChatOps incident-response bot.
#   docker build -t warroom .
#   docker run --rm -p 3000:3000 --env-file .env warroom            # serve (default)
#   docker run --rm --env-file .env warroom worker                   # RQ worker
#   docker run --rm --env-file .env warroom doctor                   # check configuration and connectivity
# warroom.yml is read from /etc/warroom/warroom.yml (mount it there; without it the defaults apply).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools only for the rare dependency without a wheel; they stay in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

# CPU-only torch first, so sentence-transformers does not pull the CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
COPY . /src
RUN pip install . \
 && python -c "import bot, engine, handlers, connectors, storage, prompts"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="warroom" \
      org.opencontainers.image.description="ChatOps bot for incident response in Slack and Microsoft Teams"

RUN groupadd --system --gid 10001 warroom \
 && useradd --system --uid 10001 --gid warroom --home-dir /home/warroom --create-home \
            --shell /usr/sbin/nologin warroom \
 && mkdir -p /var/lib/warroom /etc/warroom \
 && chown -R warroom:warroom /var/lib/warroom

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WARROOM_DATA_DIR=/var/lib/warroom \
    WARROOM_CONFIG=/etc/warroom/warroom.yml

WORKDIR /home/warroom
USER 10001:10001
VOLUME ["/var/lib/warroom"]
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["warroom"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
