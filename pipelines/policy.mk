# Uncertain labels: U-Ignore (mask them) vs U-Ones (count them as positive), CheXpert's two
# simplest policies, on the 14 observations. Both runs select their checkpoints and are scored
# on the same labels (explicit positives and negatives; blank = negative; uncertain left out),
# so the comparison is paired on the same images and labels.
#
#   make -f pipelines/policy.mk
#   make -f pipelines/policy.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
EXP_NAME := policy
TITLE := Uncertain labels: U-Ignore vs U-Ones
QUESTION := Does counting uncertain findings as positive (U-Ones) beat leaving them out of the loss (U-Ignore)?
CONFIGS := u-ignore u-ones
BASELINE := u-ignore
FLAGS_u-ignore = --task pathologies --policy u-ignore
FLAGS_u-ones = --task pathologies --policy u-ones
NOTE_NIH := NIH labels have no uncertain state, so on the demo data both policies train on identical targets and the runs must agree exactly (a check of determinism); the question needs CheXpert.
NOTES := $(if $(CHEXPERT),,NOTE_NIH)

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
