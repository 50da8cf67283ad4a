# The moderation service in a container: slim Python, non-root, data on a volume.
#   docker build -t wechat-bot .
#   docker run -p 8080:8080 -v $PWD/config.yaml:/config/config.yaml:ro \
#              -v bot-data:/data -e WECHAT_SECRET=... wechat-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BOT_CONFIG=/config/config.yaml

# CJK fonts: anything rendered inside the image (a report screenshot, a headless browser
# test) draws Chinese text, the operators' language, as glyphs rather than empty boxes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir '.[fast,postgres]'
COPY rules ./rules
COPY config.yaml /config/config.yaml

# The database and exports live on the /data volume. /app/data points there, so the
# shipped config's relative paths (data/bot.db, data/exports) land on the volume, and
# so does a mounted config that keeps them; absolute /data/... paths work as well.
RUN useradd --system --uid 10001 --home-dir /data bot \
    && mkdir -p /data && chown bot /data && ln -s /data /app/data
USER bot
VOLUME ["/data"]
EXPOSE 8080

# Reads the port from the same config the service serves (BOT_CONFIG).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; from bot.config import load_config; \
port = load_config(None).server.port; \
urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)" || exit 1

CMD ["python", "-m", "bot", "serve"]
