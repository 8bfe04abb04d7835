"""Validation against the annotators' clicks, with no ground-truth masks."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.utils import CommonKeys
from monai.utils.enums import HoVerNetBranch

__all__ = [
    "ClickMetric",
]


# -- validation metric -----------------------------------------------------------------------------------------------
class ClickMetric(Metric):
    """Validation on whole images against the annotators' clicks (no ground-truth masks needed).

    At each click: detected if the nucleus probability (3x3 mean) exceeds 0.5; its class is the most probable
    nucleus type (5x5 mean of the type softmax). ``kind="f1"``: macro F1 over the nucleus classes, an undetected
    click counting as a miss; ``kind="recall"``: share of clicks detected; ``kind="accuracy"``: share of detected
    clicks with the right class; ``kind="clicks"``: how many clicks were evaluated (over every process under DDP:
    each validation stack must count once, so this equals the validation set's clicks).
    """

    def __init__(self, kind: str = "f1", num_classes: int = 3, output_transform=None, device="cpu"):
        if kind not in ("f1", "recall", "accuracy", "clicks"):
            raise ValueError(f"kind must be f1, recall, accuracy or clicks, got {kind!r}")
        self.kind, self.num_classes = kind, num_classes
        super().__init__(output_transform=output_transform or _pred_and_label, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)  # true x predicted

    @reinit__is_reduced
    def update(self, output) -> None:
        pred, label = output
        np_prob = F.avg_pool2d(torch.softmax(pred[HoVerNetBranch.NP.value].float(), 1)[:, 1:2], 3, 1, 1)
        nc_prob = F.avg_pool2d(torch.softmax(pred[HoVerNetBranch.NC.value].float(), 1), 5, 1, 2)
        points = torch.as_tensor(label["points"]).long().reshape(np_prob.shape[0], -1, 3)
        truth = torch.as_tensor(label["point_labels"]).long().reshape(np_prob.shape[0], -1)
        for b in range(np_prob.shape[0]):
            y, x = points[b, :, 1].to(np_prob.device), points[b, :, 2].to(np_prob.device)
            detected = np_prob[b, 0, y, x] > 0.5
            predicted = nc_prob[b, 1:, y, x].argmax(0) + 1
            predicted = torch.where(detected, predicted, torch.zeros_like(predicted)).cpu()
            self._confusion.index_put_((truth[b], predicted), torch.ones_like(predicted), accumulate=True)

    @sync_all_reduce("_confusion")  # summed over processes under DDP
    def compute(self) -> float:
        c = self._confusion.double()
        clicks = c[1:].sum()
        if self.kind == "clicks":
            return float(clicks)
        if clicks == 0:
            return 0.0
        if self.kind == "recall":
            return float(c[1:, 1:].sum() / clicks)
        if self.kind == "accuracy":
            detected = c[1:, 1:].sum()
            return float(c[1:, 1:].diagonal().sum() / detected) if detected else 0.0
        scores = []
        for k in range(1, self.num_classes):
            if c[k].sum() == 0:
                continue
            tp, fp, fn = c[k, k], c[:, k].sum() - c[k, k], c[k].sum() - c[k, k]
            scores.append(float(2 * tp / (2 * tp + fp + fn)))
        return sum(scores) / len(scores) if scores else 0.0


def _pred_and_label(output: Mapping) -> tuple:
    return output[CommonKeys.PRED], output[CommonKeys.LABEL]
