# The pretraining comparison, the paper's main question: on the 14 observations, does a backbone
# learn better from random init, ImageNet weights, NIH view prediction (PA vs AP, supervised
# in-domain pretraining) or Barlow Twins on NIH (self-supervised in-domain pretraining)?
# One experiment per architecture in ARCHS (the paper: ResNet50 and DenseNet121), each with its
# loss curves, AUC tables and paired tests of every pair (in-domain vs ImageNet above all) over
# SEEDS.
#
#   make -f pipelines/pretraining.mk                            # demo: resnet18, no ImageNet file
#   make -f pipelines/pretraining.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
#
# Pretraining (on NIH's train/valid split, seed PRE_SEED) is shared by the fine-tuning seeds.
# Variables besides pipelines/common.mk's: ARCHS, PRE_EPOCHS (view), BT_EPOCHS, BT_BATCH,
# BT_OPTIMIZER (lars as in the Barlow Twins paper, with BT_LR = 0.2 x BT_BATCH / 256; or adam),
# BT_LR, BT_WD, BT_WARMUP (steps), PROJECTOR, LAMBDA, POSITIVES (patient, study or augment),
# FREEZE (epochs the pretrained backbone stays frozen).

ifeq ($(strip $(CHEXPERT)),)
ARCHS ?= resnet18
else
ARCHS ?= resnet50 densenet121
endif

ifeq ($(strip $(PT_ARCH)),)
# No architecture chosen: run this file once per architecture, side by side under make -j, after
# the data they share (NIH and CheXpert shards) is made once.
.DEFAULT_GOAL := all
.PHONY: all data
all: $(ARCHS:%=arch-%)
arch-%: data
	+$(MAKE) -f pipelines/pretraining.mk PT_ARCH=$*
data:
	+$(MAKE) -f pipelines/pretraining.mk PT_ARCH=$(firstword $(ARCHS)) data
else

EXP_NAME := pretraining-$(PT_ARCH)
ARCH := $(PT_ARCH)
PRE_SEED ?= 0
FREEZE ?= 0

TITLE := Pretraining: random vs ImageNet vs NIH view vs Barlow Twins ($(PT_ARCH))
QUESTION := Which starting point gives the best pathology AUCs after fine-tuning: random init, ImageNet, supervised in-domain pretraining (NIH view) or self-supervised in-domain pretraining (Barlow Twins on NIH)? Above all: does in-domain pretraining beat ImageNet?

include pipelines/common.mk

# Barlow Twins. The reference recipe (Zbontar et al. 2021, and its code's defaults): LARS
# (learning rate 0.2 x batch / 256 for weights, 0.0048 for biases and norms, weight decay
# 1.5e-6), batch 2048, a 8192-8192-8192 projector, lambda 0.0051, 1000 epochs with 10 warm-up
# epochs then cosine; the in-domain study draws positives from two images of one patient.
# The real-data defaults are those except where one GPU or the study's time cannot follow
# (batch, epochs); every difference is listed in the report (NOTE_BT_REDUCED).
BT_REF_BATCH := 2048
BT_REF_EPOCHS := 1000
BT_REF_PROJECTOR := 8192,8192,8192
BT_REF_LAMBDA := 0.0051
BT_REF_OPTIMIZER := lars
BT_REF_POSITIVES := patient
ifeq ($(MODE),demo)
PRE_EPOCHS ?= 3
BT_EPOCHS ?= 3
BT_BATCH ?= 32
BT_OPTIMIZER ?= adam
BT_LR ?= 1e-3
BT_WD ?= 0
PROJECTOR ?= 256,256,256
# Each demo patient has one image: there is no second image to pair with.
POSITIVES ?= augment
BT_WARMUP ?= 10
else
PRE_EPOCHS ?= 5
BT_EPOCHS ?= 100
BT_BATCH ?= 256
BT_OPTIMIZER ?= lars
BT_LR ?= $(shell awk 'BEGIN { print 0.2 * $(BT_BATCH) / 256 }')
BT_WD ?= 1.5e-6
PROJECTOR ?= $(BT_REF_PROJECTOR)
POSITIVES ?= $(BT_REF_POSITIVES)
# About 10 epochs of NIH's 90 percent training patients (about 100,000 images).
BT_WARMUP ?= $(shell echo $$((10 * 100000 / $(BT_BATCH))))
endif
LAMBDA ?= $(BT_REF_LAMBDA)

# ImageNet weights are a download: the demo leaves them out when absent; the real study
# stops with the download message (common.mk) until they are there.
ifeq ($(MODE)$(wildcard $(call imagenet_of,)),demo)
CONFIGS := random nih-view barlow
NOTE_IMAGENET := ImageNet init left out: no weights file at $(call imagenet_of,) (put the torchvision file $(IMAGENET_FILE_$(PT_ARCH)) there to include it).
else
CONFIGS := random imagenet nih-view barlow
NOTE_IMAGENET := ImageNet init from the torchvision file $(IMAGENET_FILE_$(PT_ARCH)), first convolution summed over RGB for grey input.
endif
# Every pair: in-domain against ImageNet (the paper's question) and each against random init.
COMPARE := $(call pairs_of,$(CONFIGS))
PRE := $(EXP)/pre
INIT_random := random
INIT_imagenet := imagenet
FLAGS_random = --task pathologies
FLAGS_imagenet = --task pathologies --freeze-epochs $(FREEZE)
INIT_nih-view = checkpoint:$(PRE)/nih-view/best.safetensors
FLAGS_nih-view = --task pathologies --freeze-epochs $(FREEZE)
DEPS_nih-view = $(PRE)/nih-view/best.safetensors
# The reference keeps Barlow Twins' last weights: its loss on held-out images does not say
# which backbone transfers best.
INIT_barlow = checkpoint:$(PRE)/barlow/last.safetensors
FLAGS_barlow = --task pathologies --freeze-epochs $(FREEZE)
DEPS_barlow = $(PRE)/barlow/last.safetensors
bt_differs = $(if $(filter-out $(BT_REF_$(1)),$(2)),$(3) $(2) instead of $(BT_REF_$(1)).)
BT_REDUCED = $(strip $(call bt_differs,BATCH,$(BT_BATCH),Batch) $(call bt_differs,EPOCHS,$(BT_EPOCHS),Epochs) \
  $(call bt_differs,PROJECTOR,$(PROJECTOR),Projector) $(call bt_differs,LAMBDA,$(LAMBDA),Lambda) \
  $(call bt_differs,OPTIMIZER,$(BT_OPTIMIZER),Optimiser) $(call bt_differs,POSITIVES,$(POSITIVES),Positives))
NOTE_PRE := NIH view pretraining: PA vs AP for $(PRE_EPOCHS) epoch(s), best checkpoint by NIH validation AUC; Barlow Twins: $(BT_EPOCHS) epoch(s), projector $(PROJECTOR), lambda $(LAMBDA), positives from $(POSITIVES), batch $(BT_BATCH), $(BT_OPTIMIZER) at learning rate $(BT_LR) (weight decay $(BT_WD), cosine after $(BT_WARMUP) warm-up steps), last checkpoint kept; both on the NIH train split with seed $(PRE_SEED), shared by all fine-tuning seeds; pretrained backbones frozen for $(FREEZE) epochs.
NOTE_BT_REDUCED := Barlow Twins against the reference recipe (Zbontar et al. 2021; two images of one patient as positives, as in-domain studies do): $(or $(BT_REDUCED),the same.)$(if $(filter demo,$(MODE)), On the demo every patient has one image: positives are two augmentations of it.)
NOTE_SAME := $(if $(filter demo,$(MODE)),On the demo the pretraining images are the fine-tuning images (NIH both times; test patients never seen); the real run pretrains on NIH and fine-tunes on CheXpert.)
NOTES := NOTE_IMAGENET NOTE_PRE NOTE_BT_REDUCED $(if $(NOTE_SAME),NOTE_SAME)
# The pretraining curves apart: a Barlow Twins loss is in the hundreds, a BCE below one.
EXTRA_REPORT_DEPS := $(EXP)/figures/pretraining-nih-view/loss.png $(EXP)/figures/pretraining-barlow/loss.png
EXTRA_DATA := $(NIH_MANIFEST) $(NIH_SHARDS)/index.json

# Both in-domain arms pretrain from random weights: what they learn is NIH's alone.
$(PRE)/nih-view/best.safetensors: $(NIH_SHARDS)/index.json
	$(ENV)$(LAUNCHER)$(BIN)/cxr-train fit --manifest $(NIH_MANIFEST) --shards $(NIH_SHARDS) --run-dir $(@D) --task view \
	  --arch $(ARCH) --batch-size $(BATCH) --epochs $(PRE_EPOCHS) --lr $(LR) --weight-decay $(WD) $(SCHEDULE_FLAGS) \
	  --hflip --crop $(CROP) --log-every $(LOG_EVERY) --device $(DEVICE) --seed $(PRE_SEED) --resume --keep $(KEEP)

$(PRE)/barlow/last.safetensors: $(NIH_SHARDS)/index.json
	$(ENV)$(LAUNCHER)$(BIN)/cxr-train pretrain --manifest $(NIH_MANIFEST) --shards $(NIH_SHARDS) --run-dir $(@D) \
	  --arch $(ARCH) --projector $(PROJECTOR) --lambda $(LAMBDA) --positives $(POSITIVES) \
	  --batch-size $(BT_BATCH) --epochs $(BT_EPOCHS) --optimizer $(BT_OPTIMIZER) --lr $(BT_LR) \
	  --weight-decay $(BT_WD) --schedule cosine --warmup-steps $(BT_WARMUP) \
	  --log-every $(LOG_EVERY) --device $(DEVICE) --seed $(PRE_SEED) --resume --keep last

$(EXP)/figures/pretraining-nih-view/loss.png: $(PRE)/nih-view/best.safetensors
$(EXP)/figures/pretraining-barlow/loss.png: $(PRE)/barlow/last.safetensors
$(EXP)/figures/pretraining-%/loss.png:
	$(BIN)/cxr-eval curves $(PRE)/$* --out $(@D)

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
endif
