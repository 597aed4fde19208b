# Build the wheel from the source tree, then install only the wheel: the image holds no source tree (the
# wheel carries the migrations, the sample data for `cdp demo load`, and the HTTP layer as cdp._http).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cdp ./cdp
COPY api ./api
COPY migrations ./migrations
COPY sample_data ./sample_data
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CDP_DB=/data/cdp.db \
    CDP_HOST=0.0.0.0 \
    CDP_PORT=8000

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 cdp && mkdir -p /data && chown cdp:cdp /data

USER cdp
WORKDIR /home/cdp
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["cdp", "serve"]
