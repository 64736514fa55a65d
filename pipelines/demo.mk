# The demo: the whole pipeline on the bundled NIH data (500 real images, data/nih-demo), on CPU.
#
#   index -> preprocess -> train (view: PA vs AP; sex) -> predict on the held-out test patients
#   -> AUCs with patient-bootstrap intervals, ROC curves, loss curves
#
# Every step is a file target, so an interrupted `make demo` resumes where it stopped (training
# itself resumes from its last checkpoint with --resume). Variables: OUT, BIN, SIZE, ARCH,
# VIEW_EPOCHS, SEX_EPOCHS, SEED, THREADS.
OUT ?= demo-out
BIN ?= target/release
DATA ?= data/nih-demo
SIZE ?= 64
ARCH ?= resnet18
SEED ?= 0
VIEW_EPOCHS ?= 5
SEX_EPOCHS ?= 6
TRAIN_FLAGS = --arch $(ARCH) --lr 1e-3 --batch-size 32 --hflip --crop pad:4 --seed $(SEED) --log-every 5

TASKS = view sex
SCORES = $(TASKS:%=$(OUT)/eval/%/metrics.json)

.PHONY: all
all: $(SCORES) $(OUT)/figures/loss.png
	@echo
	@echo "demo done: held-out AUCs in $(OUT)/eval/*/metrics.csv, ROC curves in $(OUT)/eval/*/roc.png,"
	@echo "loss curves in $(OUT)/figures/loss.png"

$(OUT)/manifest.parquet: $(DATA)/Data_Entry_2017_v2020.demo.csv
	$(BIN)/cxr-index nih --root $(DATA) --csv $< --require-images --fractions 0.7,0.15,0.15 --out $@

$(OUT)/shards/index.json: $(OUT)/manifest.parquet
	$(BIN)/cxr-preprocess --manifest $< --root $(DATA) --size $(SIZE) --out $(OUT)/shards

# A run directory is complete when its best checkpoint and last state exist; a half-finished run
# (killed) is resumed rather than restarted.
$(OUT)/runs/%/best.safetensors: $(OUT)/shards/index.json
	$(BIN)/cxr-train fit --manifest $(OUT)/manifest.parquet --shards $(OUT)/shards \
	  --run-dir $(OUT)/runs/$* --task $* --epochs $(if $(filter view,$*),$(VIEW_EPOCHS),$(SEX_EPOCHS)) \
	  $(TRAIN_FLAGS) --resume

$(OUT)/predictions/%.parquet: $(OUT)/runs/%/best.safetensors
	$(BIN)/cxr-train predict --checkpoint $< --shards $(OUT)/shards --manifest $(OUT)/manifest.parquet \
	  --split test --out $@

$(OUT)/eval/%/metrics.json: $(OUT)/predictions/%.parquet
	$(BIN)/cxr-eval score $< --manifest $(OUT)/manifest.parquet --bootstrap 2000 --out $(OUT)/eval/$*

$(OUT)/figures/loss.png: $(TASKS:%=$(OUT)/runs/%/best.safetensors)
	$(BIN)/cxr-eval curves $(TASKS:%=$(OUT)/runs/%) --out $(OUT)/figures

.SECONDARY:
