# Ringside as a long-running service. `docker run IMAGE` runs the embedded demo at once; mount your
# settings and set RINGSIDE_CONFIG to watch real accounts (see docker-compose.yml and the README).

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/ringside
# Dependencies first, from pyproject.toml alone, so code changes do not reinstall them.
# EXTRAS adds optional channels or engines: docker build --build-arg EXTRAS="apprise hyperscan" .
ARG EXTRAS=""
COPY pyproject.toml README.md ./
RUN EXTRAS="$EXTRAS" python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + [d for e in os.environ['EXTRAS'].split() for d in p['optional-dependencies'][e]]))" \
        > requirements.txt \
    && /opt/ringside/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY bot bot
COPY storage storage
COPY config config
COPY run_bot.py ./
RUN /opt/ringside/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin ringside \
    && mkdir -p /data /app && chown ringside:ringside /data
COPY --from=build /opt/ringside /opt/ringside
WORKDIR /app
# The shipped settings, rules and demo feed, read with paths relative to /app (mount over them to change).
COPY config/ringside.toml config/webhook.schema.json config/
COPY config/rules config/rules
COPY config/replay config/replay
COPY config/model config/model
# Datasette's metadata and search plugin, for images built with EXTRAS=datasette (see the README).
COPY config/datasette.yml config/
COPY config/datasette_plugins config/datasette_plugins
# The labelled corpus, so `run_bot.py train --out /data/scorer.json` can retrain with the operator's labels
# (build with EXTRAS=train for scikit-learn).
COPY corpus/train corpus/train
COPY run_bot.py ./
ENV PATH=/opt/ringside/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RINGSIDE_DB=/data/ringside.db \
    RINGSIDE_HTTP_HOST=0.0.0.0 \
    RINGSIDE_HTTP_PORT=8080
VOLUME ["/data"]
EXPOSE 8080
USER ringside
# Healthy only while the scheduler runs and a poll finished recently (the service's own heartbeat).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "run_bot.py", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "run_bot.py"]
CMD ["run"]
