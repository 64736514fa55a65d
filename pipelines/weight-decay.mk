# Weight decay 1e-6 (the paper's default) vs 1e-4, Adam with L2 as torch.optim.Adam applies it,
# on the 14 observations.
#
#   make -f pipelines/weight-decay.mk
#   make -f pipelines/weight-decay.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
EXP_NAME := weight-decay
TITLE := Weight decay: 1e-6 vs 1e-4
QUESTION := Does a hundred times stronger weight decay change the pathology AUCs?
CONFIGS := wd1e-6 wd1e-4
BASELINE := wd1e-6
FLAGS_wd1e-6 = --task pathologies
WD_wd1e-6 = 1e-6
FLAGS_wd1e-4 = --task pathologies
WD_wd1e-4 = 1e-4
NOTES :=

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
