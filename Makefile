# cxr: build, test, demo and benchmark from one place.
#   make demo   the whole pipeline on the bundled NIH images (CPU)
#   make test   every test (reads real data and golden files from SHARED, see below), and the
#               real-data pipelines' plans (tests/pipelines.sh)
#   make bench  whole-process speed, side by side with Python peers where installed
#   make parity the demo's recipes trained by cxr-train and by PyTorch, 5 seeds each (needs torch)
#   make lint   rustfmt, clippy and rustdoc under the workspace's lints ([workspace.lints]),
#               warnings denied, as CI would want them
#   make cross-check  type-check and clippy for ARM64 Linux (no ARM machine needed)
#   make cuda   the workspace with CUDA into target-cuda/ (nvcc from PyPI; no GPU needed), for
#               bench/gpu.sh on a GPU machine; CUDA_FEATURE=cudnn adds cuDNN
#   make gpu-payload  the cuDNN build packed into target-cuda/payload/ for tools/gpu-check.sh
#   make cuda-lint    clippy over the workspace with the cuda and cudnn features (CI runs it)

CARGO ?= cargo
RELEASE := target/release
DEMO_OUT ?= demo-out
# The read-only real data and golden files (the folder holding data/ and golden/): shared/ beside
# the repository unless CXR_SHARED or `make ... SHARED=DIR` says otherwise. Every test (through
# cxr_core::testdata) and script (SHARED=${CXR_SHARED:-../shared}) reads it as CXR_SHARED.
SHARED ?= $(or $(CXR_SHARED),../shared)
export CXR_SHARED := $(abspath $(SHARED))
CUDA_FEATURE ?= cuda

.PHONY: all build test demo bench parity lint cross-check cuda gpu-payload cuda-lint clean-demo

all: build

build:
	$(CARGO) build --release --workspace

test:
	$(CARGO) test --workspace --no-fail-fast
	tests/pipelines.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

cross-check:
	tools/cross-check.sh

demo: build
	$(MAKE) --no-print-directory -f pipelines/demo.mk OUT=$(DEMO_OUT) BIN=$(RELEASE)

bench: build
	bench/index.sh
	bench/preprocess.sh
	bench/eval.sh
	bench/train.sh

parity: build
	bench/parity.sh

cuda:
	tools/cuda-build.sh $(CUDA_FEATURE)

cuda-lint:
	tools/cuda-lint.sh

gpu-payload:
	tools/cuda-build.sh cudnn
	@du -ab target-cuda/payload target-cuda/payload/* | sort -n

clean-demo:
	rm -rf $(DEMO_OUT)
