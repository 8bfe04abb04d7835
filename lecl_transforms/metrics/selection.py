"""Which validation metrics an evaluator computes, and which one picks ``model.pt``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..utils.values import check_choice

__all__ = ["MetricSet", "select_metrics", "STACK_PREFIX"]

#: the metrics that run the inference path on whole validation stacks (``val_inference_metrics``)
STACK_PREFIX = "val_stack_"


@dataclass
class MetricSet:
    """The evaluator's metrics: ``key`` (``{name: metric}``, the key metric) and ``additional`` (the others)."""

    key: dict
    additional: dict


def select_metrics(metrics: Mapping, key: str, inference_metrics: bool = True) -> MetricSet:
    """``metrics`` split into the key metric ``key`` and the others; the ``val_stack_*`` ones only when
    ``inference_metrics``. A ``key`` that is not among them is a config error naming the choices."""
    names = [name for name in metrics if inference_metrics or not name.startswith(STACK_PREFIX)]
    check_choice(key, names, f"val_key_metric (the {STACK_PREFIX}* metrics need val_inference_metrics true)")
    return MetricSet(key={key: metrics[key]}, additional={n: metrics[n] for n in names if n != key})
