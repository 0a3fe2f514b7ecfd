# ketflow BIDS App container.
#   docker build -t ketflow:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out ketflow:0.1.0 /data /out participant
# Apptainer/Singularity: ketflow.def runs the same steps (apptainer build ketflow.sif ketflow.def),
# or convert this image: apptainer build ketflow.sif docker-daemon://ketflow:0.1.0
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="ketflow" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="BIDS App: fear/emotion-regulation circuit measures after fMRIPrep"

ENV NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/ketflow

# procps gives `ps`, used by Nipype's resource monitor; nothing else is needed at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ketflow
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY ketflow ketflow
# The same pinned install as scripts/demo.sh and scripts/test.sh (tests/test_packaging.py
# compares them), without the test extra and not editable.
RUN python -m pip install -c requirements/constraints.txt . \
    && useradd --create-home --home-dir /home/ketflow --uid 1000 ketflow \
    && python -c "import ketflow, nipype, nilearn; print('ketflow', ketflow.__version__)"

USER 1000
WORKDIR /home/ketflow
ENTRYPOINT ["ketflow"]
CMD ["--help"]
