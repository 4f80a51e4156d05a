# agentgraph with its local defaults (SmolLM2 via llama.cpp, MiniLM embeddings), CPU only.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The CPU build of torch; the default index would bring CUDA packages.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml constraints.txt README.md ./
COPY app app
COPY cli cli
COPY graphs graphs
COPY nodes nodes
COPY retrievers retrievers
COPY server server
RUN pip install --no-cache-dir -c constraints.txt .

ENV AGENTGRAPH_DATA_DIR=/data HF_HUB_OFFLINE=1
VOLUME /data
ENTRYPOINT ["agentgraph"]
CMD ["--help"]
