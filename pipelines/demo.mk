# The demo pipeline on the bundled NIH data (500 real images, data/nih-demo).
# Every step is a file target: re-running resumes where it stopped.
OUT ?= demo-out
BIN ?= target/release
DATA ?= data/nih-demo
SIZE ?= 128

.PHONY: all
all: $(OUT)/shards/index.json

$(OUT)/manifest.parquet: $(DATA)/Data_Entry_2017_v2020.demo.csv
	$(BIN)/cxr-index nih --root $(DATA) --csv $< --require-images --fractions 0.7,0.15,0.15 --out $@

$(OUT)/shards/index.json: $(OUT)/manifest.parquet
	$(BIN)/cxr-preprocess --manifest $< --root $(DATA) --size $(SIZE) --out $(OUT)/shards
