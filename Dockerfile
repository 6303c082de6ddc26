# One image for both processes and the migrations: `python worker.py`, `python bot.py`,
# `python -m imagegen.migrate` (docker-compose.yml). Runtime dependencies only, non-root.
FROM python:3.11.13-slim-bookworm
WORKDIR /app
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir -r requirements-runtime.lock
COPY imagegen ./imagegen
COPY workflows ./workflows
COPY activities ./activities
COPY migrations ./migrations
COPY worker.py bot.py ./
RUN useradd --system --no-create-home imagegen
USER imagegen
ENV PYTHONUNBUFFERED=1
# 8080: the bot's public HTTP server; 8081: the internal health port (HEALTH_PORT) of either process.
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
CMD ["python", "worker.py"]
