FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CDP_DB=/data/cdp.db \
    CDP_HOST=0.0.0.0 \
    CDP_PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cdp ./cdp
COPY api ./api
COPY migrations ./migrations
COPY sample_data ./sample_data
RUN pip install . && useradd --create-home --uid 10001 cdp && mkdir -p /data && chown cdp:cdp /data

USER cdp
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["cdp", "serve"]
