# Architecture: ResNet152 vs DenseNet121 on the 14 observations, from random init (the paper's
# comparison of a deeper ResNet with the DenseNet CheXpert's authors used).
#
#   make -f pipelines/architecture.mk
#   make -f pipelines/architecture.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
EXP_NAME := architecture
TITLE := Architecture: ResNet152 vs DenseNet121
QUESTION := Does the deeper ResNet152 beat DenseNet121 on the pathologies?
CONFIGS := densenet121 resnet152
BASELINE := densenet121
FLAGS_densenet121 = --task pathologies
ARCH_densenet121 = densenet121
FLAGS_resnet152 = --task pathologies
ARCH_resnet152 = resnet152
NOTES :=

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
