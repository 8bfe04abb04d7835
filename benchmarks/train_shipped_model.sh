#!/usr/bin/env bash
# How bundle/models/model.pt was made: a compact LECL network (width 0.125, patch 128) trained on the built-in
# synthetic data (dense regime: hazy, 4.5x anisotropic tissue-section stacks; 8 training, 2 validation, 2 test
# stacks), both stages of the paper, each keeping the epoch with the best macro F1 of the whole inference path on the
# validation stacks, then scored on the held-out test stacks.
# Usage (from the repository root): bash benchmarks/train_shipped_model.sh [OUT]   (about 7 min on 2 CPU cores)
# Then: cp OUT/models/model.pt bundle/models/model.pt
set -euo pipefail
OUT=${1:-shipped_model_run}
lecl synth --out "$OUT/data" --regime dense --n-images 12 --seed 11
python -m monai.bundle run training \
    --config_file "['bundle/configs/train.json','bundle/configs/quick.json']" \
    --meta_file bundle/configs/metadata.json --logging_file bundle/configs/logging.conf \
    --bundle_root "$OUT" --datalist "$OUT/data/datalist.json" --seed 0 \
    --epochs 40 --patches_per_epoch 32 --lr_step_epochs 30 --val_interval 5 \
    --val_inference_metrics true --val_key_metric val_stack_macro_f1
python -m monai.bundle run training \
    --config_file "['bundle/configs/train.json','bundle/configs/quick.json']" \
    --meta_file bundle/configs/metadata.json --logging_file bundle/configs/logging.conf \
    --bundle_root "$OUT" --datalist "$OUT/data/datalist.json" --seed 0 --stage 1 \
    --epochs 24 --patches_per_epoch 32 --lr_step_epochs 18 --val_interval 4 --learning_rate 0.0005 \
    --contrast_start_epoch 1 --val_inference_metrics true --val_key_metric val_stack_macro_f1
lecl predict --datalist "$OUT/data/datalist.json" --section test --model "$OUT/models/model.pt" \
    --out "$OUT/predictions"
lecl evaluate --pred "$OUT/predictions" --truth "$OUT/data/datalist.json" --section test
