# The medsearch image used by docker-compose.yml (api and indexer services). CPU build of torch.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
RUN useradd --create-home --uid 1000 medsearch && mkdir /data /models && chown medsearch /data
# torch first, from the CPU wheel index: a bare `torch` requirement would pull a multi-GB CUDA build
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY pyproject.toml README.md ./
COPY retrieval ./retrieval
COPY indexer ./indexer
COPY api ./api
RUN pip install .
USER medsearch
ENV MEDSEARCH_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000 11112
CMD ["medsearch", "serve", "--host", "0.0.0.0"]
