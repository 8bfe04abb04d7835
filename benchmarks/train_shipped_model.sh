#!/usr/bin/env bash
# How bundle/models/model.pt was made: the CPU recipe (train.json + cpu.json: a compact LECL network, width 0.125,
# patch 128, every layer trained, model.pt picked by the macro F1 of the whole inference path on the validation
# stacks, np_threshold calibrated on them) on the built-in synthetic data (dense regime: hazy, 4.5x anisotropic
# tissue-section stacks; 8 training, 2 validation, 2 test stacks), then scored on the held-out test stacks.
# Usage (from the repository root): bash benchmarks/train_shipped_model.sh [OUT]   (about 12 min on 2 CPU cores)
# Then: cp OUT/models/stage0/model.pt bundle/models/model.pt
set -euo pipefail
OUT=${1:-shipped_model_run}
lecl synth --out "$OUT/data" --regime dense --n-images 12 --seed 11
python -m monai.bundle run training \
    --config_file "['bundle/configs/train.json','bundle/configs/cpu.json']" \
    --meta_file bundle/configs/metadata.json --logging_file bundle/configs/logging.conf \
    --bundle_root "$OUT" --datalist "$OUT/data/datalist.json" --seed 0
lecl predict --datalist "$OUT/data/datalist.json" --section test --model "$OUT/models/stage0/model.pt" \
    --out "$OUT/predictions"
lecl evaluate --pred "$OUT/predictions" --truth "$OUT/data/datalist.json" --section test
