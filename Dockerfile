# One image for both processes: `python worker.py` and `python bot.py`.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY imagegen ./imagegen
COPY workflows ./workflows
COPY activities ./activities
COPY migrations ./migrations
COPY worker.py bot.py ./
ENV PYTHONUNBUFFERED=1
CMD ["python", "worker.py"]
