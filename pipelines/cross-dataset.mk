# Cross-dataset evaluation: a model trained on CheXpert, scored on NIH ChestX-ray14 and, when
# MIMIC is set, on MIMIC-CXR, each over the observations the model and that dataset both label.
# `cxr-eval score` finds them from the manifest (NIH labels 8 of CheXpert's 14: No Finding,
# Cardiomegaly, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion;
# MIMIC all 14) and names them in metrics.json and the report; the others are not scored, never
# counted as negatives. CheXpert's own validation set is scored too, as the in-domain reference.
#
#   make -f pipelines/cross-dataset.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
#   make -f pipelines/cross-dataset.mk CHEXPERT=/data/chexpert NIH=/data/nih \
#     MIMIC=/data/mimic-cxr-jpg/2.0.0 DEVICE=cuda:0
#   make -f pipelines/cross-dataset.mk        # demo: the machinery on the bundled NIH images
#
# The CheXpert model is the study's plain baseline (the pathologies from ImageNet weights,
# U-Ignore): with the run store it is the run the other experiments train, trained once.
# Test sets (folders under preds/, eval/):
#   official  CheXpert's valid.csv, per study (max over views): the in-domain reference
#   nih       NIH's NIH_SPLIT patients (default valid: 10 percent of NIH's patients, about
#             11,000 images; train adds the other 90 percent, which a CheXpert model never saw
#             either), per image
#   mimic     MIMIC-CXR's official test split (split `official` of its manifest), per study;
#             the manifest indexes that split only, so only its images need to be on disk
# Demo (no CHEXPERT): no CheXpert images are bundled, so a model with CheXpert's 14 outputs
# trained on the NIH demo's training patients stands in for one trained on CheXpert, scored on
# the 75 stand-in official images: it shows which observations are scored and named, not how
# a model transfers between hospitals.
# Variables besides pipelines/common.mk's: MIMIC (the folder holding files/ and the CSVs),
# MIMIC_METADATA, MIMIC_LABELS, MIMIC_SPLITS (file names under MIMIC), NIH_SPLIT.

EXP_NAME := cross-dataset
MIMIC ?=
TITLE := Cross-dataset: a CheXpert model on NIH ChestX-ray14$(if $(MIMIC), and MIMIC-CXR)
QUESTION := How well does a model trained on CheXpert score on other hospitals' images, over the observations both datasets label?
CONFIGS := chexpert
FLAGS_chexpert = --task pathologies --policy u-ignore$(if $(filter demo,$(MODE)), --pathologies chexpert14)

include pipelines/common.mk

ifeq ($(MODE),demo)
NIH_SPLIT ?= official
SETS := nih
DATA_NOTE := Demo data: the 500 bundled NIH ChestX-ray14 images (one per patient) at $(SIZE) px; trained on about 340 patients, checkpoints selected on another 10 percent, scored on the 75 listed in data/nih-demo/test_list.demo.txt; with 75 scored images, intervals are wide.
NOTE_CROSS := Demo: no CheXpert images are bundled, so the model with CheXpert's 14 outputs was trained on the NIH demo's training patients, standing in for one trained on CheXpert (its 6 outputs NIH never labels learn nothing); scored on the 75 stand-in official images, it shows what is scored and named, not how a model transfers between datasets.
else
NIH_SPLIT ?= valid
SETS := official nih $(if $(MIMIC),mimic)
DATA_NOTE := CheXpert at $(SIZE) px ($(VIEWS) views, whole films padded to a square): trained on 80 percent of train.csv's patients, checkpoints selected on another 10 percent; the other datasets' images prepared the same way, at the same size.
NOTE_CROSS := Trained on CheXpert only; NIH$(if $(MIMIC), and MIMIC-CXR) scored over the observations each labels (NIH: 8 of the 14; MIMIC-CXR: all 14), so mean AUCs across sets compare the CheXpert competition 5, which all label.
endif
NOTES := NOTE_CROSS

SET_TITLE_official := CheXpert's official validation set (valid.csv, radiologist consensus, per study: max over views): the in-domain reference
SET_TITLE_nih := NIH ChestX-ray14, split $(NIH_SPLIT) of its manifest (per image): the observations NIH labels
SET_TITLE_mimic := MIMIC-CXR, its official test split (per study: max over views): CheXpert's 14 observations, labelled by the same labeller on another hospital's reports

# Each other dataset: its manifest, shards, the manifest split scored and the scoring unit.
MANIFEST_nih := $(NIH_MANIFEST)
SHARDS_nih := $(NIH_SHARDS)
SPLIT_nih := $(NIH_SPLIT)
AGGREGATE_nih := image

MIMIC_METADATA ?= mimic-cxr-2.0.0-metadata.csv.gz
MIMIC_LABELS ?= mimic-cxr-2.0.0-chexpert.csv.gz
MIMIC_SPLITS ?= mimic-cxr-2.0.0-split.csv.gz
MANIFEST_mimic := $(DATA)/mimic.parquet
SHARDS_mimic := $(DATA)/mimic-$(SIZE)
SPLIT_mimic := official
AGGREGATE_mimic := study-max

EXTRA_DATA := $(foreach s,$(filter-out official,$(SETS)),$(MANIFEST_$(s)) $(SHARDS_$(s))/index.json)

# MIMIC-CXR-JPG's test split only (its images are all this experiment reads): a download of
# those images alone is enough.
$(MANIFEST_mimic):
	@mkdir -p $(@D)
	$(BIN)/cxr-index mimic --root $(MIMIC) --metadata $(MIMIC)/$(MIMIC_METADATA) --labels $(MIMIC)/$(MIMIC_LABELS) \
	  --split $(MIMIC)/$(MIMIC_SPLITS) --source-split test --drop-missing --out $@

$(DATA)/mimic-%/index.json: $(MANIFEST_mimic)
	$(BIN)/cxr-preprocess --manifest $< --root $(MIMIC) --size $* --out $(@D)

# Predict and score set $(1) with the CheXpert run; these rules' stems are shorter than
# common.mk's for preds/%.parquet and eval/%/metrics.json, so Make picks them for $(1).
# Images of another dataset's train split were never trained on: scored with leave.
define other_dataset
$(EXP)/preds/$(1)/%.parquet: $(EXP)/runs/%/best.safetensors $(SHARDS_$(1))/index.json
	$$(ENV)$$(LAUNCHER)$(BIN)/cxr-train predict --checkpoint $$< --shards $(SHARDS_$(1)) --manifest $(MANIFEST_$(1)) \
	  --split $(SPLIT_$(1)) $(TARGET_FILTER) --device $(DEVICE) --out $$@

$(EXP)/eval/$(1)/%/metrics.json: $(EXP)/preds/$(1)/%.parquet
	$(BIN)/cxr-eval score $$< --manifest $(MANIFEST_$(1)) $(EVAL_FLAGS) --aggregate $(AGGREGATE_$(1)) \
	  $(if $(filter train,$(SPLIT_$(1))),--allow-train-split )--out $$(@D) --no-plots
endef
$(foreach s,$(filter-out official,$(SETS)),$(eval $(call other_dataset,$(s))))

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
