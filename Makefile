# cxr: build, test, demo and benchmark from one place.
#   make demo   the whole pipeline on the bundled NIH images (CPU)
#   make test   every test (reads ../shared for real data and golden files), and the real-data
#               pipelines' plans (tests/pipelines.sh)
#   make bench  whole-process speed, side by side with Python peers where installed
#   make parity the demo's recipes trained by cxr-train and by PyTorch, 5 seeds each (needs torch)
#   make lint   rustfmt and clippy, as CI would want them
#   make cross-check  type-check and clippy for ARM64 Linux (no ARM machine needed)
#   make cuda   the workspace with CUDA into target-cuda/ (nvcc from PyPI; no GPU needed), for
#               bench/gpu.sh on a GPU machine; CUDA_FEATURE=cudnn adds cuDNN
#   make gpu-payload  the cuDNN build packed into target-cuda/payload/ for bench/gpu-check.sh
#   make cuda-lint    clippy over the workspace with the cuda and cudnn features (CI runs it)

CARGO ?= cargo
RELEASE := target/release
DEMO_OUT ?= demo-out
SHARED ?= ../shared
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

cross-check:
	bench/cross-check.sh

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
	bench/cuda-build.sh $(CUDA_FEATURE)

cuda-lint:
	bench/cuda-lint.sh

gpu-payload:
	bench/cuda-build.sh cudnn
	@du -ab target-cuda/payload target-cuda/payload/* | sort -n

clean-demo:
	rm -rf $(DEMO_OUT)
