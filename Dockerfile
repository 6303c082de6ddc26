# One image for both processes: `python worker.py` and `python bot.py`.
FROM python:3.11-slim
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
CMD ["python", "worker.py"]
