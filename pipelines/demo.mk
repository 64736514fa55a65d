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
