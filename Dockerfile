# campus-bridge container image.
#   docker build -t campus-bridge .
#   docker run --rm -e TOP_APP_KEY -e TOP_APP_SECRET -e KAFKA_BOOTSTRAP_SERVERS -e TOP_GATEWAY_URL \
#              -p 9464:9464 campus-bridge
# The image's config is config/bridge.yaml, the production example: it has no defaults for the brokers, the
# gateway URL, the app key or the secret, so the four variables above are required (a missing one exits 2,
# naming it). No simulator key or secret is in the image. Mount your own config at
# /etc/campus-bridge/bridge.yaml and rules at /etc/campus-bridge/rules/.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/campus-bridge
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# Runtime dependencies only (no [dev] extra); the package itself is installed, not linked.
RUN /opt/campus-bridge/bin/pip install --no-cache-dir . \
 && /opt/campus-bridge/bin/bridge --version

# ---------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="campus-bridge" \
      org.opencontainers.image.description="Kafka campus events -> alibaba.campus.mc.message.sendmessagetomobile" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 campus-bridge \
 && useradd --system --uid 10001 --gid campus-bridge --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin campus-bridge
COPY --from=build /opt/campus-bridge /opt/campus-bridge
COPY config/bridge.yaml /etc/campus-bridge/bridge.yaml
COPY config/rules/campus.yaml /etc/campus-bridge/rules/campus.yaml
ENV PATH=/opt/campus-bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_CONFIG=/etc/campus-bridge/bridge.yaml \
    BRIDGE_METRICS_LISTEN=0.0.0.0:9464
USER 10001:10001
WORKDIR /tmp
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["bridge"]
CMD ["run", "-c", "/etc/campus-bridge/bridge.yaml"]
