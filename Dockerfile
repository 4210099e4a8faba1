# syntax=docker/dockerfile:1
# The lipstream server: `lipstream serve` with the default voice (en_US-joe-medium, installed by pip) and the
# default avatar, the viseme renderer, as a non-root user.
#
#   docker build -t lipstream:0.1.0 .
#   docker run --rm -e LIPSTREAM_INSECURE=1 -p 127.0.0.1:50051:50051 -p 127.0.0.1:8080:8080 lipstream:0.1.0
#
# The server listens on all the container's addresses (LIPSTREAM_HOST=0.0.0.0), and a server that does so
# starts only with TLS and tokens (--tls-cert, --tls-key, --auth-token-file: mount them) or with
# LIPSTREAM_INSECURE=1, for a port published on the host's loopback only as above or a proxy that secures it.
#
# Ports: 50051 gRPC (LipStream, grpc.health.v1, reflection); 8080 the kiosk page, its WebSocket and /healthz.
# Settings: the `lipstream serve` flags after the image name, the LIPSTREAM_* variables, or a config file
# mounted at /etc/lipstream/lipstream.toml with `serve --config /etc/lipstream/lipstream.toml`.
#
# NVIDIA GPUs: the same image with PyTorch's CUDA build (its wheels bring the CUDA libraries; the host needs
# the NVIDIA driver and container toolkit, run with --gpus all):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cuXXX -t lipstream:0.1.0-cuda .
# (cuXXX: a CUDA version that PyTorch 2.13 is built for and the host's driver supports.)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# PyTorch's wheel index: the CPU build by default (PyPI's Linux wheels are the larger CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/lipstream lipstream

WORKDIR /opt/lipstream
COPY pyproject.toml README.md Makefile ./
COPY protos protos
COPY models models
COPY server server
COPY client client
# The install step the test suite runs (`make setup`), with the server's extras only.
RUN make setup VENV=/opt/lipstream/.venv EXTRAS=server TORCH_PIP_ARGS="--index-url ${TORCH_INDEX_URL}" \
    && rm -rf /root/.cache

ENV PATH=/opt/lipstream/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LIPSTREAM_HOST=0.0.0.0 \
    LIPSTREAM_PORT=50051 \
    LIPSTREAM_WEB_PORT=8080
EXPOSE 50051 8080
USER 10001:10001
WORKDIR /home/lipstream

# Docker's own check (Kubernetes uses its gRPC probes instead): the process answers grpc.health.v1, in
# plaintext: with TLS on, run with --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s CMD python -c "import grpc, os, sys; \
from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
c = grpc.insecure_channel('127.0.0.1:' + os.environ['LIPSTREAM_PORT']); \
sys.exit(g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=4).status != h.HealthCheckResponse.SERVING)"

ENTRYPOINT ["lipstream"]
CMD ["serve"]
