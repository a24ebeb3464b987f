# One image for every llmqueue service; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY api api
COPY routing routing
COPY workers workers
COPY jobstore jobstore
COPY emulator emulator
COPY llmqueue llmqueue
COPY migrations migrations
RUN pip install --no-cache-dir . && useradd --create-home llmqueue
USER llmqueue
EXPOSE 8000
CMD ["llmqueue", "api", "--host", "0.0.0.0", "--port", "8000"]
