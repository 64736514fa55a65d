# The whole study, every experiment side by side: on a cluster, one GPU job per run.
#
#   make -j 32 -f pipelines/study.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0 \
#     LAUNCH='srun --gres=gpu:1 --ntasks=1 --cpus-per-task=8' OUT=/scratch/study
#
# First the data every experiment reads (manifests and shards), made once, one experiment's
# share after another: two makes must never build one manifest or shard set at the same time.
# Then all experiments under one jobserver (`+`), so `-j N` keeps N runs going across them. They
# share $(OUT)/run-store: a run that several experiments ask for (the plain baseline of policy,
# weight decay, aux, DAM, architecture and pretraining) is trained once, the others waiting on
# its lock. Ends with one report of them all, $(OUT)/report.md. `make demo` is this file on the
# bundled data (pipelines/demo.mk). Every step is a file target: an interrupted study resumes.
# Variables: OUT, BIN, CHEXPERT, NIH, ARCHS (pretraining's), ARGS_<experiment> (extra variables
# for one experiment's make), TITLE, INTRO; the rest pass through to the pipelines.
OUT ?= study-out
BIN ?= target/release
ifeq ($(strip $(CHEXPERT)),)
ARCHS ?= resnet18
else
ARCHS ?= resnet50 densenet121
endif
EXPERIMENTS := easy policy weight-decay aux dam architecture pretraining
TITLE ?= cxr: the study
INTRO ?=
STUDY = $(MAKE) --no-print-directory CHEXPERT=$(CHEXPERT) NIH=$(NIH) OUT=$(OUT) BIN=$(BIN) ARCHS="$(ARCHS)"
REPORTED := $(filter-out pretraining,$(EXPERIMENTS)) $(ARCHS:%=pretraining-%)

.PHONY: all data FORCE
all: $(OUT)/report.md
	@echo
	@echo "done: $(OUT)/report.md (tables, tests, figures); per experiment: $(OUT)/*/report.md"

data:
	+$(foreach e,$(EXPERIMENTS),$(STUDY) -f pipelines/$(e).mk $(ARGS_$(e)) data &&) true

# (Not .PHONY: phony targets skip pattern rules. No such file is ever made, so they always run.)
experiment-%: data
	+$(STUDY) -f pipelines/$*.mk $(ARGS_$*)

# The experiments decide themselves what is left to do; the report is cheap and always rebuilt.
$(OUT)/report.md: $(EXPERIMENTS:%=experiment-%) FORCE
	$(BIN)/cxr-eval report $(REPORTED:%=$(OUT)/%) --title "$(TITLE)" $(if $(INTRO),--intro $(INTRO)) --out $@
FORCE:
