# One image for every conveyor node: `conveyor serve` runs the HTTP API, the WebSocket feeds and
# the executors. Multi-stage: wheels are built in the first stage, the runtime stage has no
# compiler and runs as an unprivileged user. The healthcheck asks the node's readiness endpoint.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /app conveyor
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER conveyor
WORKDIR /app
ENV CONVEYOR_HOST=0.0.0.0 \
    CONVEYOR_PORT=3000 \
    PYTHONUNBUFFERED=1
EXPOSE 3000
# 200 from /health/ready: PostgreSQL and Redis answer, every actor runs, not draining
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:3000/health/ready', timeout=2)"]
# the first SIGTERM drains (jobs finish or are handed back); give it CONVEYOR_DRAIN_GRACE_SECONDS
STOPSIGNAL SIGTERM
ENTRYPOINT ["conveyor"]
CMD ["serve"]
