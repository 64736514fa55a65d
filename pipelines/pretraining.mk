# The pretraining comparison, the paper's main question: on the 14 observations, does a backbone
# learn better from random init, ImageNet weights, NIH view prediction (PA vs AP, supervised
# in-domain pretraining) or Barlow Twins on NIH (self-supervised in-domain pretraining)?
# One experiment per architecture in ARCHS (the paper: ResNet50 and DenseNet121), each with its
# loss curves, AUC table and paired tests against random init over SEEDS.
#
#   make -f pipelines/pretraining.mk                            # demo: resnet18, no ImageNet file
#   make -f pipelines/pretraining.mk CHEXPERT=/data/chexpert NIH=/data/nih DEVICE=cuda:0
#
# Pretraining (on NIH's train/valid split, seed PRE_SEED) is shared by the fine-tuning seeds.
# Variables besides pipelines/common.mk's: ARCHS, WEIGHTS (folder of torchvision's ImageNet
# .pth files), PRE_EPOCHS (view), BT_EPOCHS, BT_BATCH, BT_OPTIMIZER (adam, or lars as in the
# Barlow Twins paper, with BT_LR = 0.2 x BT_BATCH / 256), BT_LR, PROJECTOR, LAMBDA, POSITIVES
# (augment, study or patient), FREEZE (epochs the pretrained backbone stays frozen).

ifeq ($(strip $(CHEXPERT)),)
ARCHS ?= resnet18
else
ARCHS ?= resnet50 densenet121
endif

ifeq ($(strip $(PT_ARCH)),)
# No architecture chosen: run this file once per architecture.
.DEFAULT_GOAL := all
.PHONY: all
all:
	$(foreach a,$(ARCHS),$(MAKE) -f pipelines/pretraining.mk PT_ARCH=$(a) &&) true
else

EXP_NAME := pretraining-$(PT_ARCH)
ARCH := $(PT_ARCH)
WEIGHTS ?= weights
IMAGENET_FILE_resnet18 := resnet18-f37072fd.pth
IMAGENET_FILE_resnet50 := resnet50-0676ba61.pth
IMAGENET_FILE_resnet152 := resnet152-394f9c45.pth
IMAGENET_FILE_densenet121 := densenet121-a639ec97.pth
IMAGENET_WEIGHTS := $(WEIGHTS)/$(IMAGENET_FILE_$(PT_ARCH))
PRE_SEED ?= 0
FREEZE ?= 0
POSITIVES ?= augment
LAMBDA ?= 5e-3
BT_OPTIMIZER ?= adam

TITLE := Pretraining: random vs ImageNet vs NIH view vs Barlow Twins ($(PT_ARCH))
QUESTION := Which starting point gives the best pathology AUCs after fine-tuning: random init, ImageNet, supervised in-domain pretraining (NIH view) or self-supervised in-domain pretraining (Barlow Twins on NIH)?

include pipelines/common.mk

ifeq ($(MODE),demo)
PRE_EPOCHS ?= 3
BT_EPOCHS ?= 3
BT_BATCH ?= 32
BT_LR ?= 1e-3
PROJECTOR ?= 256,256,256
else
PRE_EPOCHS ?= 5
BT_EPOCHS ?= 20
BT_BATCH ?= 64
BT_LR ?= 1e-3
PROJECTOR ?= 2048,2048,2048
endif

# ImageNet weights are a download (torchvision's files); the demo leaves them out when absent.
ifeq ($(MODE)$(wildcard $(IMAGENET_WEIGHTS)),demo)
CONFIGS := random nih-view barlow
NOTE_IMAGENET := ImageNet init left out: no weights file at $(IMAGENET_WEIGHTS) (put the torchvision file $(IMAGENET_FILE_$(PT_ARCH)) there to include it).
else
CONFIGS := random imagenet nih-view barlow
NOTE_IMAGENET := ImageNet init from the torchvision file $(IMAGENET_FILE_$(PT_ARCH)), first convolution summed over RGB for grey input.
endif
BASELINE := random
PRE := $(EXP)/pre
FLAGS_random = --task pathologies
FLAGS_imagenet = --task pathologies --init imagenet:$(IMAGENET_WEIGHTS) --freeze-epochs $(FREEZE)
DEPS_imagenet = $(IMAGENET_WEIGHTS)
FLAGS_nih-view = --task pathologies --init checkpoint:$(PRE)/nih-view/best.safetensors --freeze-epochs $(FREEZE)
DEPS_nih-view = $(PRE)/nih-view/best.safetensors
FLAGS_barlow = --task pathologies --init checkpoint:$(PRE)/barlow/best.safetensors --freeze-epochs $(FREEZE)
DEPS_barlow = $(PRE)/barlow/best.safetensors
NOTE_PRE := NIH view pretraining: PA vs AP for $(PRE_EPOCHS) epoch(s); Barlow Twins: $(BT_EPOCHS) epoch(s), projector $(PROJECTOR), lambda $(LAMBDA), positives from $(POSITIVES), batch $(BT_BATCH), $(BT_OPTIMIZER) at learning rate $(BT_LR); both on the NIH train split with seed $(PRE_SEED), shared by all fine-tuning seeds; pretrained backbones frozen for $(FREEZE) epochs.
NOTE_SAME := $(if $(filter demo,$(MODE)),On the demo the pretraining images are the fine-tuning images (NIH both times; test patients never seen); the real run pretrains on NIH and fine-tunes on CheXpert.)
NOTES := NOTE_IMAGENET NOTE_PRE $(if $(NOTE_SAME),NOTE_SAME)
# The pretraining curves apart: a Barlow Twins loss is in the hundreds, a BCE below one.
EXTRA_REPORT_DEPS := $(EXP)/figures/pretraining-nih-view/loss.png $(EXP)/figures/pretraining-barlow/loss.png

$(PRE)/nih-view/best.safetensors: $(NIH_SHARDS)/index.json
	$(ENV)$(BIN)/cxr-train fit --manifest $(NIH_MANIFEST) --shards $(NIH_SHARDS) --run-dir $(@D) --task view \
	  --arch $(ARCH) --batch-size $(BATCH) --epochs $(PRE_EPOCHS) --lr $(LR) --weight-decay $(WD) $(SCHEDULE_FLAGS) \
	  --hflip --crop $(CROP) --log-every $(LOG_EVERY) --device $(DEVICE) --seed $(PRE_SEED) --resume --keep $(KEEP)

$(PRE)/barlow/best.safetensors: $(NIH_SHARDS)/index.json
	$(ENV)$(BIN)/cxr-train pretrain --manifest $(NIH_MANIFEST) --shards $(NIH_SHARDS) --run-dir $(@D) \
	  --arch $(ARCH) --projector $(PROJECTOR) --lambda $(LAMBDA) --positives $(POSITIVES) \
	  --batch-size $(BT_BATCH) --epochs $(BT_EPOCHS) --optimizer $(BT_OPTIMIZER) --lr $(BT_LR) \
	  --log-every $(LOG_EVERY) --device $(DEVICE) \
	  --seed $(PRE_SEED) --resume --keep $(KEEP)

$(EXP)/figures/pretraining-%/loss.png: $(PRE)/%/best.safetensors
	$(BIN)/cxr-eval curves $(PRE)/$* --out $(@D)

$(IMAGENET_WEIGHTS):
	@echo "missing $@: download https://download.pytorch.org/models/$(@F) into $(WEIGHTS)/" >&2
	@false

.DEFAULT_GOAL := all
.PHONY: all
all: $(EXP)/report.md
endif
