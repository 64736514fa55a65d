# Deep AUC Maximization: fine-tune a cross-entropy run with LibAUC's AUC-margin loss (margin 1)
# and PESG, from that run's backbone with a fresh classifier (LibAUC's CheXpert recipe), and
# compare with the cross-entropy run it started from.
#
#   make -f pipelines/dam.mk
#   make -f pipelines/dam.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
#
# Variables besides pipelines/common.mk's: DAM_LR (0.1), DAM_EPOCHS, EPOCH_DECAY (2e-3), MARGIN.
EXP_NAME := dam
TITLE := Deep AUC Maximization: cross-entropy vs AUC-margin loss
QUESTION := Does fine-tuning a cross-entropy model with the AUC-margin loss (PESG) raise its AUCs?
CONFIGS := bce dam
BASELINE := bce
DAM_LR ?= 0.1
EPOCH_DECAY ?= 2e-3
MARGIN ?= 1.0
FLAGS_bce = --task pathologies
# LibAUC's CheXpert recipe: ImageNet (INIT, the real-data default), cross-entropy, then the
# AUC-margin loss from the cross-entropy run's backbone.
INIT_dam = checkpoint:$(EXP)/runs/bce__s$(call seed,$*)/best.safetensors
FLAGS_dam = --task pathologies \
  --loss aucm --margin $(MARGIN) --optimizer pesg --epoch-decay $(EPOCH_DECAY) --pesg-decay-every 1
DEPS_dam = $(EXP)/runs/bce__s$(call seed,$*)/best.safetensors
LR_dam = $(DAM_LR)
WD_dam = 1e-5
EPOCHS_dam = $(or $(DAM_EPOCHS),$(EPOCHS))
NOTE_DAM = Each AUC-margin run starts from the backbone of the cross-entropy run of the same seed and trains $(or $(DAM_EPOCHS),$(EPOCHS)) more epoch(s) (lr $(DAM_LR), divided by 10 and reference moved at every epoch start, epoch decay $(EPOCH_DECAY), weight decay 1e-5, margin $(MARGIN)), so it has seen more training than its baseline.
NOTES := NOTE_DAM

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
