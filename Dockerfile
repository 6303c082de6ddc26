# One image for both processes and the migrations: `python worker.py`, `python bot.py`,
# `python -m imagegen.migrate` (docker-compose.yml, compose.cloud.yml). Runtime dependencies only, non-root.
# The build context is only what the COPY lines below name (.dockerignore): add a line there too.
FROM python:3.11.13-slim-bookworm
WORKDIR /app
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir -r requirements-runtime.lock
COPY imagegen ./imagegen
COPY workflows ./workflows
COPY activities ./activities
COPY migrations ./migrations
COPY worker.py bot.py ./
# A fixed uid: the Temporal Cloud key mounted by compose.cloud.yml must be readable by it (README).
RUN useradd --system --uid 10001 --no-create-home imagegen
USER imagegen
ENV PYTHONUNBUFFERED=1
# 8080: the bot's public HTTP server; 8081: the internal health port (HEALTH_PORT) of either process.
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
CMD ["python", "worker.py"]
