# Shared by every experiment pipeline (included, never run alone).
#
# An experiment sets EXP_NAME, TITLE, QUESTION, CONFIGS, BASELINE or COMPARE (optional) and, per
# configuration C, FLAGS_C (cxr-train fit flags), INIT_C (random, imagenet or checkpoint:PATH;
# default INIT) and DEPS_C (files the run needs first, e.g. a pretrained checkpoint), then
# includes this file. Runs are named C__sS (configuration C, seed S); every step is a file
# target, so an interrupted pipeline resumes where it stopped:
#
#   $(EXP)/runs/C__sS/best.safetensors       cxr-train fit (--resume: a killed run continues;
#                                            checkpoints selected on `valid`, a patient slice
#                                            of the training file), a link into
#                                            $(OUT)/run-store: experiments asking for the same
#                                            run (a shared baseline) train it once
#   $(EXP)/preds/T/C__sS.parquet             cxr-train predict on test set T (SETS):
#                                              official  the dataset's own evaluation set
#                                                        (CheXpert's valid.csv: radiologist
#                                                        consensus), scored per study (max over
#                                                        views): the headline, comparable with
#                                                        published numbers
#                                              test      held-out patients of the training file
#                                                        (labeller labels), per image
#   $(EXP)/eval/T/C__sS/metrics.json         cxr-eval score: AUCs with patient-bootstrap intervals
#   $(EXP)/compare/T/A_vs_B__sS/comparison.json  cxr-eval compare of A against B, same seed,
#                                            for each pair A:B of COMPARE (default: every
#                                            configuration against BASELINE; pairs_of gives all)
#   $(EXP)/figures/loss.png                  cxr-eval curves of all runs
#   $(EXP)/report.md                         cxr-eval report: a section per test set
#
# Data: the bundled NIH demo by default; CHEXPERT=/path NIH=/path for the real study.
#   CHEXPERT   folder holding CheXpert-v1.0-small/ (or set CHEXPERT_CSV to the label files)
#   NIH        folder holding NIH ChestX-ray14's images/ and Data_Entry_2017_v2020.csv
# Other variables: OUT (everything goes under it), BIN, DEVICE (cpu, cuda:0), SIZE, ARCH,
# INIT (random or imagenet: torchvision's file for the architecture, from WEIGHTS), EPOCHS,
# BATCH, LR, WD, SCHEDULE (constant or cosine), WARMUP (cosine's warm-up steps), CROP, VIEWS
# (all: frontal and lateral images as separate examples; frontal), SEEDS, BOOTSTRAP,
# LOG_EVERY, EVAL_EVERY (steps; 0: validate at epoch ends only), THREADS (RAYON_NUM_THREADS),
# KEEP (what a finished run keeps: best, last or all).
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
  # findings cannot be learned from 340 training images whatever the settings, so their
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
  INIT ?= random
  VIEWS ?= all
  DATA_NOTE := Demo data: the 500 bundled NIH ChestX-ray14 images (one per patient) at $(SIZE) px stand in for CheXpert; 75 listed in data/nih-demo/test_list.demo.txt stand in for the official evaluation set, the other 425 patients are split 80/10/10 percent into training (about 340), validation (checkpoint selection) and held-out test (48). Pathologies are the 14 NIH findings; with 48-75 scored images per set, intervals are wide and most differences are noise.
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
  INIT ?= imagenet
  VIEWS ?= all
  DATA_NOTE := CheXpert at $(SIZE) px ($(VIEWS) views, whole films padded to a square): trained on 80 percent of train.csv's patients, checkpoints selected on another 10 percent, scored on the official validation set (valid.csv: 234 images, 200 patients, radiologist consensus; per study, max over views) as the headline and on the last 10 percent of train.csv's patients (labeller labels, per image) as a second table; NIH ChestX-ray14 for pretraining.
endif
TARGET_FILTER := $(if $(filter frontal,$(VIEWS)),--frontal-only)

DATA := $(OUT)/data
EXP := $(OUT)/$(EXP_NAME)

# ---- data --------------------------------------------------------------------------------
DEMO := data/nih-demo
NIH_CSV ?= Data_Entry_2017_v2020.csv
CHEXPERT_CSV ?= CheXpert-v1.0-small/train.csv CheXpert-v1.0-small/valid.csv

# The demo's patients outside the official list: training, validation, held-out test.
DEMO_FRACTIONS ?= 0.8,0.1,0.1
ifeq ($(strip $(NIH)),)
$(DATA)/nih.parquet: $(DEMO)/Data_Entry_2017_v2020.demo.csv $(DEMO)/test_list.demo.txt
	@mkdir -p $(@D)
	$(BIN)/cxr-index nih --root $(DEMO) --csv $< --require-images --official-list $(DEMO)/test_list.demo.txt \
	  --fractions $(DEMO_FRACTIONS) --out $@
NIH_ROOT := $(DEMO)
else
$(DATA)/nih.parquet:
	@mkdir -p $(@D)
	$(BIN)/cxr-index nih --root $(NIH) --csv $(NIH)/$(NIH_CSV) --drop-missing --fractions 0.9,0.1,0 --out $@
NIH_ROOT := $(NIH)
endif

# Shards at any size: nih-224/ is the NIH manifest's images at 224 px, whole films padded to a
# square (cxr-preprocess's default; a centre crop would cut the apices and costophrenic angles
# off CheXpert's portrait films).
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
	$(BIN)/cxr-index chexpert --root $(CHEXPERT) $(addprefix --csv ,$(CHEXPERT_CSV)) --fractions 0.8,0.1,0.1 --out $@

$(DATA)/chexpert-%/index.json: $(DATA)/chexpert.parquet
	$(BIN)/cxr-preprocess --manifest $< --root $(CHEXPERT) --size $* --out $(@D)
endif
# The shards configuration $(1) trains on: SIZE_C overrides SIZE.
shards_of = $(TARGET_PREFIX)-$(or $(SIZE_$(1)),$(SIZE))
NIH_MANIFEST := $(DATA)/nih.parquet
NIH_SHARDS := $(DATA)/nih-$(SIZE)

# ---- initial weights --------------------------------------------------------------------
# ImageNet weights are a download (torchvision's files), never fetched behind the user's back.
WEIGHTS ?= weights
IMAGENET_FILE_resnet18 := resnet18-f37072fd.pth
IMAGENET_FILE_resnet34 := resnet34-b627a593.pth
IMAGENET_FILE_resnet50 := resnet50-0676ba61.pth
IMAGENET_FILE_resnet101 := resnet101-63fe2227.pth
IMAGENET_FILE_resnet152 := resnet152-394f9c45.pth
IMAGENET_FILE_densenet121 := densenet121-a639ec97.pth
IMAGENET_FILE_densenet169 := densenet169-b2777c0a.pth
IMAGENET_FILE_densenet201 := densenet201-c1103571.pth
# The architecture of configuration $(1), its ImageNet file, its init (INIT_C overrides INIT).
arch_of = $(or $(ARCH_$(1)),$(ARCH))
imagenet_of = $(WEIGHTS)/$(IMAGENET_FILE_$(call arch_of,$(1)))
init_of = $(or $(INIT_$(1)),$(INIT))
init_flag = --init $(if $(filter imagenet,$(call init_of,$(1))),imagenet:$(call imagenet_of,$(1)),$(call init_of,$(1)))
init_deps = $(if $(filter imagenet,$(call init_of,$(1))),$(call imagenet_of,$(1)))

$(WEIGHTS)/%.pth:
	@echo "missing $@: download https://download.pytorch.org/models/$(@F) into $(WEIGHTS)/ (or run with INIT=random)" >&2
	@false

# ---- runs --------------------------------------------------------------------------------
RUNS = $(foreach c,$(CONFIGS),$(foreach s,$(SEEDS),$(c)__s$(s)))
cfg = $(firstword $(subst __s, ,$(1)))
seed = $(lastword $(subst __s, ,$(1)))
# Test sets: the folder under preds/, eval/ and compare/ is the manifest's split.
SETS := official test
SET_TITLE_official := Official evaluation set$(if $(filter demo,$(MODE)), (stand-in: data/nih-demo/test_list.demo.txt), (CheXpert valid.csv, radiologist consensus, per study: max over views)): the headline
SET_TITLE_test := Held-out test patients of the training file$(if $(filter real,$(MODE)), (labeller labels, per image))
AGGREGATE_official := study-max
AGGREGATE_test := image
# A stem `T/C__sS` (or `T/A_vs_B__sS`): its test set and run.
set_of = $(patsubst %/,%,$(dir $(1)))
run_of = $(notdir $(1))
# Pairs compared: A:B tests A against B. pairs_of gives every pair of a list, later against
# earlier.
COMPARE ?= $(foreach c,$(filter-out $(BASELINE),$(CONFIGS)),$(if $(BASELINE),$(c):$(BASELINE)))
pairs_of = $(if $(word 2,$(1)),$(foreach b,$(wordlist 2,$(words $(1)),$(1)),$(b):$(firstword $(1))) $(call pairs_of,$(wordlist 2,$(words $(1)),$(1))))
pair_dir = $(subst :,_vs_,$(1))
pair_a = $(firstword $(subst _vs_, ,$(1)))
pair_b = $(lastword $(subst _vs_, ,$(1)))
# Runs predicting age are summarised by their MAE (cxr-eval report reads the predictions).
SCORED = $(foreach t,$(SETS),$(foreach r,$(RUNS),$(if $(filter age,$(call cfg,$(r))),$(EXP)/preds/$(t)/$(r).parquet,$(EXP)/eval/$(t)/$(r)/metrics.json)))
COMPARED = $(foreach t,$(SETS),$(foreach p,$(COMPARE),$(foreach s,$(SEEDS),$(EXP)/compare/$(t)/$(call pair_dir,$(p))__s$(s)/comparison.json)))
# The shared flags of configuration $(1); ARCH_C, EPOCHS_C, LR_C, WD_C, CROP_C and INIT_C
# override the defaults for configuration C (cxr-train refuses a flag given twice).
train_flags = --arch $(call arch_of,$(1)) --batch-size $(BATCH) --epochs $(or $(EPOCHS_$(1)),$(EPOCHS)) \
  --lr $(or $(LR_$(1)),$(LR)) --weight-decay $(or $(WD_$(1)),$(WD)) $(SCHEDULE_FLAGS) --hflip --crop $(or $(CROP_$(1)),$(CROP)) \
  --log-every $(LOG_EVERY) --eval-every $(EVAL_EVERY) --device $(DEVICE) $(TARGET_FILTER) $(call init_flag,$(1))
SCHEDULE_FLAGS = --schedule $(SCHEDULE)$(if $(filter cosine,$(SCHEDULE)), --warmup-steps $(WARMUP))
KEEP ?= best
EVAL_FLAGS ?= --blank negative --bootstrap $(BOOTSTRAP)
ENV = $(if $(THREADS),RAYON_NUM_THREADS=$(THREADS) )
# A launcher prefix for every training and prediction command, e.g. Slurm:
#   make -j 32 -f pipelines/pretraining.mk ... LAUNCH='srun --gres=gpu:1 --ntasks=1 --exclusive'
# (the run store's lock keeps two jobs off one run).
LAUNCH ?=
LAUNCHER = $(if $(strip $(LAUNCH)),$(strip $(LAUNCH)) )

.SECONDEXPANSION:

$(EXP)/runs/%/best.safetensors: $$(call shards_of,$$(call cfg,$$*))/index.json $$(DEPS_$$(call cfg,$$*)) $$(call init_deps,$$(call cfg,$$*))
	$(ENV)$(LAUNCHER)$(BIN)/cxr-train fit --manifest $(TARGET_MANIFEST) --shards $(call shards_of,$(call cfg,$*)) --run-dir $(@D) \
	  --seed $(call seed,$*) $(call train_flags,$(call cfg,$*)) $(FLAGS_$(call cfg,$*)) --run-store $(OUT)/run-store \
	  --keep $(KEEP)

$(EXP)/preds/%.parquet: $(EXP)/runs/$$(call run_of,$$*)/best.safetensors
	$(ENV)$(LAUNCHER)$(BIN)/cxr-train predict --checkpoint $< --shards $(call shards_of,$(call cfg,$(call run_of,$*))) \
	  --manifest $(TARGET_MANIFEST) --split $(call set_of,$*) $(TARGET_FILTER) --device $(DEVICE) --out $@

$(EXP)/eval/%/metrics.json: $(EXP)/preds/%.parquet
	$(BIN)/cxr-eval score $< --manifest $(TARGET_MANIFEST) $(EVAL_FLAGS) --aggregate $(AGGREGATE_$(call set_of,$*)) \
	  --out $(@D) --no-plots

$(EXP)/compare/%/comparison.json: $(EXP)/preds/$$(call set_of,$$*)/$$(call pair_a,$$(call cfg,$$(call run_of,$$*)))__s$$(call seed,$$*).parquet \
    $(EXP)/preds/$$(call set_of,$$*)/$$(call pair_b,$$(call cfg,$$(call run_of,$$*)))__s$$(call seed,$$*).parquet
	$(BIN)/cxr-eval compare $^ --manifest $(TARGET_MANIFEST) $(EVAL_FLAGS) --aggregate $(AGGREGATE_$(call set_of,$*)) \
	  --out $(@D) --no-plots

# Secondary expansion: an experiment may set CONFIGS after including this file (pretraining.mk
# does); expanded at once, the figure had no prerequisites and `make -j` drew it first.
RUN_MODELS = $(RUNS:%=$(EXP)/runs/%/best.safetensors)
$(EXP)/figures/loss.png: $$(RUN_MODELS)
	$(BIN)/cxr-eval curves $(RUNS:%=$(EXP)/runs/%) --out $(@D)

# experiment.json tells cxr-eval report what the directory holds; rewritten on every run (cheap).
comma := ,
empty :=
space := $(empty) $(empty)
# $(1) as one single-quoted shell word (notes hold apostrophes and parentheses).
quote = '$(subst ','\'',$(1))'
json_words = [$(subst $(space),$(comma),$(foreach w,$(1),"$(w)"))]
json_pairs = [$(subst $(space),$(comma),$(foreach p,$(1),$(call json_words,$(subst :, ,$(p)))))]
json_sets = [$(subst $(space),$(comma),$(foreach t,$(SETS),{"name":"$(t)","title":"$(subst $(space),~,$(SET_TITLE_$(t)))"}))]
$(EXP)/experiment.json: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' $(call quote,{"title": "$(TITLE)"$(comma) "question": "$(QUESTION)"$(comma) "comparisons": $(call json_pairs,$(COMPARE))$(comma) "test_sets": $(subst ~, ,$(call json_sets))$(comma) "configs": $(call json_words,$(CONFIGS))$(comma) "seeds": [$(subst $(space),$(comma),$(strip $(SEEDS)))]$(comma) "manifest": "$(TARGET_MANIFEST)"$(comma) "notes": [$(foreach n,$(NOTES),"$($(n))"$(comma)) "$(DATA_NOTE)"]}) > $@.tmp && mv $@.tmp $@

# What every run of the experiment reads. pipelines/study.mk makes it for each experiment in
# turn before running them side by side: two makes must never build one manifest or shard set
# at once.
.PHONY: data
data: $$(TARGET_MANIFEST) $$(sort $$(foreach c,$$(CONFIGS),$$(call shards_of,$$(c))/index.json)) $$(EXTRA_DATA)

$(EXP)/report.md: $(EXP)/experiment.json $$(SCORED) $$(COMPARED) $(EXP)/figures/loss.png $$(EXTRA_REPORT_DEPS)
	$(BIN)/cxr-eval report $(EXP) --title "$(TITLE)" --out $@

flags-%: FORCE
	@echo $(call train_flags,$*) $(FLAGS_$*)
shards-%: FORCE
	@echo $(call shards_of,$*)
print-%: FORCE
	@printf '%s\n' $(call quote,$($*))

.PHONY: FORCE
FORCE:
.SECONDARY:
