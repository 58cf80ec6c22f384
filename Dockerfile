# raypose on GPUs: Ray's CUDA image (same Ray as pyproject's) with raypose installed.
#   docker build -t raypose:0.1.0 .
#   docker run --gpus all -v $PWD/data:/home/ray/raypose/data raypose:0.1.0 \
#       raypose tune search_spaces/onecycle.yaml
# The cluster configs in cluster/ use this image for the head and the GPU workers.
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/raypose
ENV MPLBACKEND=Agg \
    PIP_NO_CACHE_DIR=1

# torch/torchvision as pinned by the project's constraint (CUDA build from PyPI).
RUN pip install "torch==2.14.1" "torchvision==0.29.1"

# The head's MLflow server: a PostgreSQL store that outlives the node (psycopg2), artifacts in S3 (boto3).
RUN pip install "psycopg2-binary>=2.9" "boto3>=1.34"

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users raypose ./raypose
RUN pip install -e .

COPY --chown=ray:users configs ./configs
COPY --chown=ray:users search_spaces ./search_spaces

# Pretrained weights, when baked in, go to torch's hub cache (see README, "Weights offline").
ENV TORCH_HOME=/home/ray/.cache/torch
CMD ["raypose", "--help"]
