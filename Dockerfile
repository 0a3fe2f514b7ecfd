# ketflow BIDS App container.
#   docker build -t ketflow:latest .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out ketflow:latest /data /out participant
# Singularity/Apptainer: singularity build ketflow.sif docker-daemon://ketflow:latest
FROM python:3.11-slim-bookworm

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
# The same pinned install as CI (scripts/test.sh), without the test extra.
RUN python -m pip install -c requirements/constraints.txt . \
    && useradd --create-home --home-dir /home/ketflow --uid 1000 ketflow \
    && python -c "import ketflow, nipype, nilearn; print('ketflow', ketflow.__version__)"

USER 1000
WORKDIR /home/ketflow
ENTRYPOINT ["ketflow"]
CMD ["--help"]
