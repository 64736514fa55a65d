# The easy tasks: can the pipeline learn what any chest X-ray model should (sex, age, view)?
# The paper's sanity check before the pathologies: near-perfect AUCs for view (PA vs AP) and sex,
# a few years' error for age. A failure here is a bug in the data or the training, not science.
#
#   make -f pipelines/easy.mk                                   # demo data, CPU
#   make -f pipelines/easy.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
#
# Variables: see pipelines/common.mk.
EXP_NAME := easy
TITLE := Easy tasks: sex, age and view
QUESTION := Sanity check of data and training: a chest X-ray model should tell PA from AP, male from female, and estimate age within years.
CONFIGS := sex age view
BASELINE :=
FLAGS_sex = --task sex
# Age has no AUC to select the best checkpoint by: select by validation loss.
FLAGS_age = --task age --select loss
FLAGS_view = --task view
NOTE_AGE := Age is a regression (smooth L1 on age / 100); its number is the mean absolute error in years, lower is better.
NOTES := NOTE_AGE

# On the demo data these tasks can be learned, given pixels and epochs. Settings measured over
# seeds (README, "What the demo shows"): view at 64 px for 10 epochs, AUC 0.99-1.00 on the
# official stand-in set and the held-out patients; sex at 64 px for 15 epochs, 0.88-0.93; age
# needs 128 px (10 epochs: MAE 10.1-10.2 years on the official stand-in set against 11.7 for
# the training mean, 9.2-10.3 against 12.8 on the held-out patients).
ifeq ($(strip $(CHEXPERT)),)
SIZE ?= 64
EPOCHS ?= 15
EPOCHS_view = 10
SIZE_age = 128
EPOCHS_age = 10
CROP ?= pad:4
CROP_age = pad:8
EVAL_EVERY ?= 0
NOTE_SIZES := On the demo, view and sex train at 64 px and age at 128 px.
NOTES += NOTE_SIZES
endif

include pipelines/common.mk

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
