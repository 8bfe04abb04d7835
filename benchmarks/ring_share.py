"""Where a model calls "nucleus" on stacks with ground truth: per slice, the share of pixels with nucleus probability
>= a level inside the true nuclei, in the ring 1-3 px outside them, and farther out. A model that learns the
unlabelled rims around nuclei as nucleus (issue 17 item 4) shows a growing ring share while its inside share
stays; its detection F1 then falls as neighbours merge.

    python benchmarks/ring_share.py --model RUN/models/stage0/model.pt --datalist DATA/datalist.json \
        --section validation [--level 0.8]

Prints one row per model (several --model allowed): inside / ring / far shares, pooled over the section's stacks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def shares(model: str, entries: list[dict], root: Path, level: float) -> dict:
    import tifffile
    import torch
    from scipy import ndimage

    from lecl_transforms.engines import StackPipeline, bundle_config
    from lecl_transforms.networks.model_io import load_model

    network, description = load_model(model)
    pipeline = StackPipeline.from_config(bundle_config("inference.json"), description, {"progress": False})
    counts = np.zeros((3, 2))  # rows inside / ring / far; columns: pixels at >= level, pixels
    for entry in entries:
        truth = tifffile.imread(root / entry["instances"]) > 0
        outputs = pipeline.network_outputs(pipeline.load(str(root / entry["image"])), network)
        for z0, out in outputs.batches:
            prob = torch.softmax(out["nucleus_prediction"].float(), dim=1)[:, 1].numpy()
            for k, p in enumerate(prob):
                inside = truth[z0 + k]
                if p.shape != inside.shape:  # a rescaled model: compare at the stack's grid
                    p = ndimage.zoom(p, np.divide(inside.shape, p.shape), order=1)
                out_dist = ndimage.distance_transform_edt(~inside)
                regions = (inside, (out_dist > 0) & (out_dist <= 3), out_dist > 3)
                for r, region in enumerate(regions):
                    counts[r] += [(p[region] >= level).sum(), region.sum()]
    share = counts[:, 0] / np.maximum(counts[:, 1], 1)
    return {"model": model, "inside": share[0], "ring_1_3px": share[1], "far": share[2]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--section", default="validation")
    parser.add_argument("--level", type=float, default=0.8)
    args = parser.parse_args(argv)
    datalist = Path(args.datalist)
    entries = json.loads(datalist.read_text())[args.section]
    print(f"| model | inside true nuclei | ring 1-3 px outside | farther out |  (p >= {args.level}, {args.section})")
    print("|---|---:|---:|---:|")
    for model in args.model:
        row = shares(model, entries, datalist.parent, args.level)
        print(f"| {row['model']} | {row['inside']:.3f} | {row['ring_1_3px']:.3f} | {row['far']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
