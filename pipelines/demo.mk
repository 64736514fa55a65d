# The demo: a small version of the whole study on the bundled NIH data (500 real images,
# data/nih-demo), on CPU, in about eleven minutes on two cores: every experiment pipeline with
# small settings (ResNet18; the easy tasks at 64-128 px for 10-15 epochs, where they learn;
# the findings at 32 px for 2 epochs; two seeds), then one report, $(OUT)/report.md.
#
# It is pipelines/study.mk without CHEXPERT and NIH: every step is a file target, so an
# interrupted `make demo` resumes where it stopped, and `make -j N` runs experiments side by
# side. The real study is the same file with CHEXPERT=... NIH=... (see README).
# Variables: OUT, BIN, SEEDS, THREADS; per-experiment ones pass through to the pipelines.
OUT ?= demo-out
SEEDS ?= 0 1
override CHEXPERT :=
override NIH :=
ARGS_architecture := SEEDS=0
TITLE := cxr: the study in miniature (demo data)
INTRO := pipelines/demo-intro.md
export SEEDS
include pipelines/study.mk

# Grad-CAM heatmaps (cxr-train predict --image --cam) of two bundled films of the official
# stand-in set (never trained or selected on), a PA and an AP: where the easy experiment's seed-0
# view model (64 px) and age model (128 px) find their evidence. $(OUT)/heatmaps/TASK/ gets the
# predictions and, per film, STEM.TASK.png (the heatmap over the input square the model saw) and
# STEM.TASK.safetensors (the maps). Drawn once the easy experiment has trained; like the
# report, cheap and redrawn on every run.
HEATMAP_FILMS := data/nih-demo/images/00000550_000.png data/nih-demo/images/00003449_000.png
HEATMAP_TASKS := view age
all: $(HEATMAP_TASKS:%=$(OUT)/heatmaps/%/predictions.parquet)
$(OUT)/heatmaps/%/predictions.parquet: experiment-easy
	$(BIN)/cxr-train predict --checkpoint $(OUT)/easy/runs/$*__s0/best.safetensors --image $(HEATMAP_FILMS) \
	  --cam $* --out $@
