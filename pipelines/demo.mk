# The demo: a small version of the whole study on the bundled NIH data (500 real images,
# data/nih-demo), on CPU, in about eleven minutes on two cores: every experiment pipeline with
# small settings (ResNet18; the easy tasks at 64-128 px for 10-15 epochs, where they learn;
# the findings at 32 px for 2 epochs; two seeds), then one report, $(OUT)/report.md.
#
# Every step is a file target in the pipelines, so an interrupted `make demo` resumes where it
# stopped. The real study is the same pipelines with CHEXPERT=... NIH=... (see README).
# Variables: OUT, BIN, SEEDS, THREADS; per-experiment ones pass through to the pipelines.
OUT ?= demo-out
BIN ?= target/release
SEEDS ?= 0 1
EXPERIMENTS := easy policy weight-decay aux dam architecture pretraining-resnet18
DEMO = $(MAKE) --no-print-directory CHEXPERT= NIH= OUT=$(OUT) BIN=$(BIN) SEEDS="$(SEEDS)"

.PHONY: all FORCE
all: $(OUT)/report.md
	@echo
	@echo "demo done: $(OUT)/report.md (tables, tests, figures); per experiment: $(OUT)/*/report.md"

# The pipelines decide themselves what is left to do; the report is cheap and always rebuilt.
$(OUT)/report.md: FORCE
	+$(DEMO) -f pipelines/easy.mk
	+$(DEMO) -f pipelines/pretraining.mk ARCHS=resnet18
	+$(DEMO) -f pipelines/policy.mk
	+$(DEMO) -f pipelines/weight-decay.mk
	+$(DEMO) -f pipelines/aux.mk
	+$(DEMO) -f pipelines/dam.mk
	+$(DEMO) -f pipelines/architecture.mk SEEDS=0
	$(BIN)/cxr-eval report $(EXPERIMENTS:%=$(OUT)/%) --title "cxr: the study in miniature (demo data)" \
	  --intro pipelines/demo-intro.md --out $@
FORCE:
