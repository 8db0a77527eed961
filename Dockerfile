# dmp-faust worker image: `docker build -t dmp-faust .`, or `docker compose up --build`.
# Every dependency ships as a wheel on PyPI (amd64 and arm64), so no compiler.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so that editing the code
# does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself: the top-level packages of [tool.setuptools.packages.find].
COPY README.md ./
COPY dmp_faust/ dmp_faust/
COPY agents/ agents/
COPY tables/ tables/
RUN pip install --no-deps . && rm -rf /src

# Run as a non-root user. /data holds RocksDB and local state, /history the Parquet
# history when docker-compose.yml shares it; creating them here owned by that user
# lets a fresh named volume mounted on them inherit the owner.
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home dmp \
    && mkdir -p /data /history \
    && chown dmp:dmp /data /history
USER dmp
WORKDIR /app

ENV DMP_DATA_DIR=/data \
    DMP_WEB_PORT=6066
EXPOSE 6066

CMD ["dmp-faust", "worker"]
