# Shared by every experiment pipeline (included, never run alone).
#
# An experiment sets EXP_NAME, TITLE, QUESTION, CONFIGS, BASELINE (optional) and, per
# configuration C, FLAGS_C (cxr-train fit flags) and DEPS_C (files the run needs first, e.g. a
# pretrained checkpoint), then includes this file. Runs are named C__sS (configuration C, seed S);
# every step is a file target, so an interrupted pipeline resumes where it stopped:
#
#   $(EXP)/runs/C__sS/best.safetensors    cxr-train fit (--resume: a killed run continues),
#                                         a link into $(OUT)/run-store: experiments asking
#                                         for the same run (a shared baseline) train it once
#   $(EXP)/preds/C__sS.parquet            cxr-train predict on the held-out test patients
#   $(EXP)/eval/C__sS/metrics.json        cxr-eval score: AUCs with patient-bootstrap intervals
#   $(EXP)/compare/C__sS/comparison.json  cxr-eval compare against BASELINE, same seed
#   $(EXP)/figures/loss.png               cxr-eval curves of all runs
#   $(EXP)/report.md                      cxr-eval report: tables, tests, seed agreement
#
# Data: the bundled NIH demo by default; CHEXPERT=/path NIH=/path for the real study.
#   CHEXPERT   folder holding CheXpert-v1.0-small/ (or set CHEXPERT_CSV to the label files)
#   NIH        folder holding NIH ChestX-ray14's images/ and Data_Entry_2017_v2020.csv
# Other variables: OUT (everything goes under it), BIN, DEVICE (cpu, cuda:0), SIZE, ARCH,
# EPOCHS, BATCH, LR, WD, SCHEDULE (constant or cosine), WARMUP (cosine's warm-up steps), CROP,
# SEEDS, BOOTSTRAP, LOG_EVERY, EVAL_EVERY (steps; 0: validate at epoch ends only), THREADS
# (RAYON_NUM_THREADS), KEEP (what a finished run keeps: best, last or all).
#
# `make -f pipelines/X.mk flags-C` prints configuration C's cxr-train fit flags, `shards-C`
# its shard directory and `print-VAR` a variable's value (bench/parity.sh trains PyTorch on
# exactly these).

BIN ?= target/release
CHEXPERT ?=
NIH ?=
DEVICE ?= cpu
THREADS ?=

ifeq ($(strip $(CHEXPERT)),)
  # The demo: 500 real NIH images stand in for both datasets; their 14 NIH findings are the
  # "pathologies" (observation.rs maps them onto CheXpert's names where they exist). The
  # findings cannot be learned from 350 training images whatever the settings, so their
  # experiments run small (32 px, 2 epochs) to show the machinery; easy.mk, whose tasks can be
  # learned, sets its own larger settings, chosen by measurement (README, "The demo").
  MODE := demo
  OUT ?= demo-out
  SIZE ?= 32
  ARCH ?= resnet18
  EPOCHS ?= 2
  BATCH ?= 32
  LR ?= 1e-3
  WD ?= 0
  SCHEDULE ?= cosine
  WARMUP ?= 10
  SEEDS ?= 0 1
  BOOTSTRAP ?= 1000
  CROP ?= pad:2
  LOG_EVERY ?= 2
  EVAL_EVERY ?= 5
  TARGET_FILTER :=
  DATA_NOTE := Demo data: the 500 bundled NIH ChestX-ray14 images (one per patient, 70/15/15 percent patient split) at $(SIZE) px stand in for CheXpert; pathologies are the 14 NIH findings, scored on the 15 percent test patients (92 images), so intervals are wide and most differences are noise.
else
  MODE := real
  OUT ?= out
  SIZE ?= 224
  ARCH ?= densenet121
  EPOCHS ?= 3
  BATCH ?= 16
  LR ?= 1e-4
  WD ?= 1e-6
  SCHEDULE ?= constant
  WARMUP ?= 0
  SEEDS ?= 0 1 2
  BOOTSTRAP ?= 2000
  CROP ?= resized:0.8
  LOG_EVERY ?= 50
  EVAL_EVERY ?= 0
  TARGET_FILTER := --frontal-only
  DATA_NOTE := CheXpert (frontal images, patient split 80/10/10 of train and valid) at $(SIZE) px; NIH ChestX-ray14 for pretraining.
endif

DATA := $(OUT)/data
EXP := $(OUT)/$(EXP_NAME)

# ---- data --------------------------------------------------------------------------------
DEMO := data/nih-demo
NIH_CSV ?= Data_Entry_2017_v2020.csv
CHEXPERT_CSV ?= CheXpert-v1.0-small/train.csv CheXpert-v1.0-small/valid.csv

ifeq ($(strip $(NIH)),)
$(DATA)/nih.parquet: $(DEMO)/Data_Entry_2017_v2020.demo.csv
	@mkdir -p $(@D)
	$(BIN)/cxr-index nih --root $(DEMO) --csv $< --require-images --fractions 0.7,0.15,0.15 --out $@
NIH_ROOT := $(DEMO)
else
$(DATA)/nih.parquet:
	@mkdir -p $(@D)
	$(BIN)/cxr-index nih --root $(NIH) --csv $(NIH)/$(NIH_CSV) --drop-missing --fractions 0.9,0.1,0 --out $@
NIH_ROOT := $(NIH)
endif

# Shards at any size: nih-224/ is the NIH manifest's images at 224 px.
$(DATA)/nih-%/index.json: $(DATA)/nih.parquet
	$(BIN)/cxr-preprocess --manifest $< --root $(NIH_ROOT) --size $* --out $(@D)

ifeq ($(MODE),demo)
TARGET_MANIFEST := $(DATA)/nih.parquet
TARGET_PREFIX := $(DATA)/nih
else
TARGET_MANIFEST := $(DATA)/chexpert.parquet
TARGET_PREFIX := $(DATA)/chexpert
$(DATA)/chexpert.parquet:
	@mkdir -p $(@D)
	$(BIN)/cxr-index chexpert --root $(CHEXPERT) $(addprefix --csv ,$(CHEXPERT_CSV)) --frontal-only --out $@

$(DATA)/chexpert-%/index.json: $(DATA)/chexpert.parquet
	$(BIN)/cxr-preprocess --manifest $< --root $(CHEXPERT) --size $* --out $(@D)
endif
# The shards configuration $(1) trains on: SIZE_C overrides SIZE.
shards_of = $(TARGET_PREFIX)-$(or $(SIZE_$(1)),$(SIZE))
NIH_MANIFEST := $(DATA)/nih.parquet
NIH_SHARDS := $(DATA)/nih-$(SIZE)

# ---- runs --------------------------------------------------------------------------------
RUNS = $(foreach c,$(CONFIGS),$(foreach s,$(SEEDS),$(c)__s$(s)))
cfg = $(firstword $(subst __s, ,$(1)))
seed = $(lastword $(subst __s, ,$(1)))
# Runs predicting age are summarised by their MAE (cxr-eval report reads the predictions).
SCORED = $(foreach r,$(RUNS),$(if $(filter age,$(call cfg,$(r))),$(EXP)/preds/$(r).parquet,$(EXP)/eval/$(r)/metrics.json))
COMPARED = $(if $(BASELINE),$(foreach r,$(filter-out $(BASELINE)__s%,$(RUNS)),$(EXP)/compare/$(r)/comparison.json))
# The shared flags of configuration $(1); ARCH_C, EPOCHS_C, LR_C, WD_C and CROP_C override the defaults
# for configuration C (cxr-train refuses a flag given twice).
train_flags = --arch $(or $(ARCH_$(1)),$(ARCH)) --batch-size $(BATCH) --epochs $(or $(EPOCHS_$(1)),$(EPOCHS)) \
  --lr $(or $(LR_$(1)),$(LR)) --weight-decay $(or $(WD_$(1)),$(WD)) $(SCHEDULE_FLAGS) --hflip --crop $(or $(CROP_$(1)),$(CROP)) \
  --log-every $(LOG_EVERY) --eval-every $(EVAL_EVERY) --device $(DEVICE) $(TARGET_FILTER)
SCHEDULE_FLAGS = --schedule $(SCHEDULE)$(if $(filter cosine,$(SCHEDULE)), --warmup-steps $(WARMUP))
KEEP ?= best
EVAL_FLAGS ?= --blank negative --bootstrap $(BOOTSTRAP)
ENV = $(if $(THREADS),RAYON_NUM_THREADS=$(THREADS) )

.SECONDEXPANSION:

$(EXP)/runs/%/best.safetensors: $$(call shards_of,$$(call cfg,$$*))/index.json $$(DEPS_$$(call cfg,$$*))
	$(ENV)$(BIN)/cxr-train fit --manifest $(TARGET_MANIFEST) --shards $(call shards_of,$(call cfg,$*)) --run-dir $(@D) \
	  --seed $(call seed,$*) $(call train_flags,$(call cfg,$*)) $(FLAGS_$(call cfg,$*)) --run-store $(OUT)/run-store \
	  --keep $(KEEP)

$(EXP)/preds/%.parquet: $(EXP)/runs/%/best.safetensors
	$(ENV)$(BIN)/cxr-train predict --checkpoint $< --shards $(call shards_of,$(call cfg,$*)) --manifest $(TARGET_MANIFEST) \
	  --split test $(TARGET_FILTER) --device $(DEVICE) --out $@

$(EXP)/eval/%/metrics.json: $(EXP)/preds/%.parquet
	$(BIN)/cxr-eval score $< --manifest $(TARGET_MANIFEST) $(EVAL_FLAGS) --out $(@D) --no-plots

$(EXP)/compare/%/comparison.json: $(EXP)/preds/%.parquet $(EXP)/preds/$$(BASELINE)__s$$(call seed,$$*).parquet
	$(BIN)/cxr-eval compare $^ --manifest $(TARGET_MANIFEST) $(EVAL_FLAGS) --out $(@D) --no-plots

$(EXP)/figures/loss.png: $(RUNS:%=$(EXP)/runs/%/best.safetensors)
	$(BIN)/cxr-eval curves $(RUNS:%=$(EXP)/runs/%) --out $(@D)

# experiment.json tells cxr-eval report what the directory holds; rewritten on every run (cheap).
comma := ,
empty :=
space := $(empty) $(empty)
json_words = [$(subst $(space),$(comma),$(foreach w,$(1),"$(w)"))]
$(EXP)/experiment.json: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '{"title": "$(TITLE)", "question": "$(QUESTION)", $(if $(BASELINE),"baseline": "$(BASELINE)"$(comma)) "configs": $(call json_words,$(CONFIGS)), "seeds": [$(subst $(space),$(comma),$(strip $(SEEDS)))], "manifest": "$(TARGET_MANIFEST)", "notes": [$(foreach n,$(NOTES),"$($(n))"$(comma)) "$(DATA_NOTE)"]}' > $@.tmp && mv $@.tmp $@

$(EXP)/report.md: $(EXP)/experiment.json $$(SCORED) $$(COMPARED) $(EXP)/figures/loss.png $$(EXTRA_REPORT_DEPS)
	$(BIN)/cxr-eval report $(EXP) --title "$(TITLE)" --out $@

flags-%: FORCE
	@echo $(call train_flags,$*) $(FLAGS_$*)
shards-%: FORCE
	@echo $(call shards_of,$*)
print-%: FORCE
	@echo $($*)

.PHONY: FORCE
FORCE:
.SECONDARY:
