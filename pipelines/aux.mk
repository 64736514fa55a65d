# Auxiliary losses: the 14 observations alone, or with sex and age heads (loss weights 0.1) on the
# same backbone. The means compared are over the observations; the auxiliary sex output is
# scored beside them.
#
#   make -f pipelines/aux.mk
#   make -f pipelines/aux.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
EXP_NAME := aux
TITLE := Auxiliary losses: off vs on (sex and age, weight 0.1)
QUESTION := Do auxiliary sex and age heads help the backbone learn the pathologies?
CONFIGS := no-aux aux
BASELINE := no-aux
AUX ?= sex=0.1,age=0.1
FLAGS_no-aux = --task pathologies
FLAGS_aux = --task pathologies --aux $(AUX)
NOTES :=

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
