"""Calibration of the post-processing on the validation stacks (StarDist's optimize_thresholds pattern): the network
runs once per stack, each candidate threshold re-runs only post-processing + linking, the best pooled detection F1 is
chosen and the curve kept; the handler stores both in the models the training leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_stack_metric import N_Z, TruthNetwork, _validator, _write_stack

#: nucleus probability the fake network gives the true nuclei and the ghosts (blobs where no nucleus is)
NUCLEUS_P, GHOST_P = 0.65, 0.45


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _ghost_mask(synthetic, radius: int = 2, clearance: int = 12) -> np.ndarray:
    """``(Y, X)`` discs, on every slice, where there is no nucleus on any slice and no click within ``clearance``
    px: what the network wrongly calls "maybe nucleus"."""
    inst = synthetic.instances
    size = inst.shape[1]
    clicks = synthetic.points()[:, 1:3]
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for cy in range(radius + 2, size - radius - 2, 2 * radius + 4):
        for cx in range(radius + 2, size - radius - 2, 2 * radius + 4):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            near = np.hypot(*(clicks - [cy, cx]).T).min() < clearance if len(clicks) else False
            crowded = mask[max(0, cy - 2 * radius): cy + 2 * radius + 1, max(0, cx - 2 * radius): cx + 2 * radius + 1]
            if not near and not (inst[:, disc] > 0).any() and not crowded.any():
                mask |= disc
    return mask


class GhostNetwork(TruthNetwork):
    """The true maps, but with nucleus probability ``NUCLEUS_P`` on the nuclei and ``GHOST_P`` on ghost discs: a
    threshold below ``GHOST_P`` finds the ghosts too (false positives), one above ``NUCLEUS_P`` finds nothing."""

    def __init__(self, synthetic):
        super().__init__(synthetic)
        ghosts = torch.as_tensor(_ghost_mask(synthetic))
        assert int(ghosts.sum()) > 0
        fg = torch.full_like(self.np_logits[:, 1], -10.0)
        fg[torch.as_tensor(synthetic.instances > 0)] = _logit(NUCLEUS_P)
        fg[:, ghosts] = _logit(GHOST_P)
        self.np_logits = torch.stack([torch.zeros_like(fg), fg], 1)
        self.n_ghosts = _count_discs(ghosts.numpy())


def _count_discs(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


@pytest.fixture(scope="module")
def ghost_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    synthetic, entry = _write_stack(folder)
    return synthetic, entry


def test_the_threshold_between_ghosts_and_nuclei_is_chosen_from_one_network_run(ghost_data):
    from lecl_transforms.metrics import calibrate_postprocessing

    synthetic, entry = ghost_data
    network = GhostNetwork(synthetic)
    validator = _validator([entry], network, min_instance_size=0)
    calibration = calibrate_postprocessing(validator, {"np_threshold": [0.3, 0.4, 0.5, 0.6, 0.7]})
    assert network.calls == -(-N_Z // 4)  # the network ran once per batch of slices, not once per candidate
    f1 = {row["np_threshold"]: row["np_f1"] for row in calibration.curve}
    n_true, ghosts = len(synthetic.points()), network.n_ghosts
    # below the ghosts: every nucleus and every ghost found; between: the nuclei only; above the nuclei: nothing
    assert f1[0.3] == f1[0.4] == pytest.approx(2 * n_true / (2 * n_true + ghosts))
    assert f1[0.5] == f1[0.6] == 1.0
    assert f1[0.7] == 0.0
    # ties go to the candidate nearest the uncalibrated value (inference.json's fallback 0.7)
    assert calibration.values == {"np_threshold": 0.6} and calibration.score == 1.0
    assert calibration.before == {"np_threshold": 0.7, "np_f1": 0.0}
    assert calibration.stacks == 1 and calibration.clicks == n_true
    stored = calibration.description_values()
    assert stored["np_threshold"] == 0.6 and stored["calibration"]["curve"] == calibration.curve
    assert "<- chosen" in calibration.table().splitlines()[4]  # header, 0.3, 0.4, 0.5, 0.6


def test_min_instance_size_can_be_calibrated_too(ghost_data):
    """A grid over two keys: every pair is tried; the ghosts are small discs, so a size floor above their area
    removes them and any threshold below the nuclei's probability then scores 1."""
    from lecl_transforms.metrics import calibrate_postprocessing

    synthetic, entry = ghost_data
    network = GhostNetwork(synthetic)
    validator = _validator([entry], network)
    ghost_area = int(_ghost_mask(synthetic).sum()) // network.n_ghosts
    smallest_nucleus = min(int(np.bincount(z.ravel())[1:][np.bincount(z.ravel())[1:] > 0].min())
                           for z in synthetic.instances if z.any())
    assert ghost_area < 15 < smallest_nucleus
    calibration = calibrate_postprocessing(validator, {"np_threshold": [0.4, 0.6], "min_instance_size": [0, 15]})
    assert len(calibration.curve) == 4
    f1 = {(r["np_threshold"], r["min_instance_size"]): r["np_f1"] for r in calibration.curve}
    assert f1[(0.4, 0)] < 1.0 and f1[(0.4, 15)] == f1[(0.6, 0)] == f1[(0.6, 15)] == 1.0
    assert calibration.values["np_threshold"] == 0.6


def test_min_volume_um3_is_calibrated_on_the_linking_of_one_detection_per_threshold(ghost_data):
    """The ghosts are thin discs on every slice: as 3D nuclei they are far smaller (um^3) than any true nucleus, so
    a volume floor between the two removes them at a threshold that finds them; each threshold's per-slice
    detection is made once and linked with every volume candidate."""
    from lecl_transforms.metrics import calibrate_postprocessing

    synthetic, entry = ghost_data
    network = GhostNetwork(synthetic)
    validator = _validator([entry], network, min_instance_size=0)
    voxel = float(np.prod(synthetic.spacing))
    ghost_volume = int(_ghost_mask(synthetic).sum()) // network.n_ghosts * N_Z * voxel
    smallest_nucleus = np.bincount(synthetic.instances.ravel())[1:]
    smallest_nucleus = smallest_nucleus[smallest_nucleus > 0].min() * voxel
    floor = (ghost_volume + smallest_nucleus) / 2
    assert ghost_volume < 0.8 * floor and floor < 0.8 * smallest_nucleus
    inferer = validator.pipeline.inferer
    detections = []
    inferer.detect = lambda outputs, post=None, detect=inferer.detect: detections.append(post) or detect(outputs, post)
    calibration = calibrate_postprocessing(validator, {"np_threshold": [0.4, 0.6], "min_volume_um3": [0, floor]})
    assert len(detections) == 2 and network.calls == -(-N_Z // 4)  # per threshold, not per pair; network once
    f1 = {(r["np_threshold"], r["min_volume_um3"]): r["np_f1"] for r in calibration.curve}
    n_true = len(synthetic.points())
    assert f1[(0.4, 0)] == pytest.approx(2 * n_true / (2 * n_true + network.n_ghosts))
    assert f1[(0.4, floor)] == f1[(0.6, 0)] == f1[(0.6, floor)] == 1.0
    # F1 ties go to the candidate nearest the uncalibrated settings (np_threshold 0.7, min_volume_um3 0)
    assert calibration.values == {"np_threshold": 0.6, "min_volume_um3": 0}
    assert calibration.before is None  # 0.7 is not on the grid
    # with the threshold fixed at one that finds the ghosts, the volume floor is what is chosen
    alone = calibrate_postprocessing(validator, {"np_threshold": [0.4], "min_volume_um3": [0, floor]})
    assert alone.values == {"np_threshold": 0.4, "min_volume_um3": floor} and alone.score == 1.0
    assert alone.description_values()["min_volume_um3"] == floor
    # the chosen value is exactly what inference does with it: the pipeline built with it gives the same F1
    tuned = _validator([entry], network, min_instance_size=0, np_threshold=0.4, min_volume_um3=floor)
    assert tuned.pipeline.link.transform.min_volume_um3 == floor
    assert tuned.run()["np_f1"] == 1.0


def test_bad_grids_are_refused():
    from lecl_transforms.errors import LECLInputError
    from lecl_transforms.metrics import check_grid

    assert check_grid({"np_threshold": [0.9, 0.3, 0.3]}) == {"np_threshold": [0.3, 0.9]}
    assert check_grid({"min_volume_um3": [20, 0, 12.5]}) == {"min_volume_um3": [0.0, 12.5, 20.0]}
    for grid, message in (({"np_threshold": [0.3, 1.2]}, "between 0 and 1"), ({"split_depth": [1]}, "unknown keys"),
                          ({"min_instance_size": [-1]}, "whole number"), ({}, "candidates per key"),
                          ({"min_volume_um3": [10, -5]}, "um\\^3"), ({"min_volume_um3": ["big"]}, "um\\^3")):
        with pytest.raises(LECLInputError, match=message):
            check_grid(grid)


def test_no_validation_stacks_leave_the_model_uncalibrated(ghost_data, caplog):
    from lecl_transforms.metrics import calibrate_postprocessing

    synthetic, _ = ghost_data
    with caplog.at_level("WARNING"):
        assert calibrate_postprocessing(_validator([], GhostNetwork(synthetic)), {"np_threshold": [0.5]}) is None
    assert "not calibrated" in caplog.text
