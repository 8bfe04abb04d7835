"""The training plan in the log: patches per step, steps per epoch, and which pipeline steps are cached."""

from __future__ import annotations

import logging
import math

from monai.transforms import Compose, RandomizableTrait, Transform

from ..data.epochs import paper_patches_per_epoch
from ..errors import input_error
from ..utils.values import optional

__all__ = ["resolve_patches_per_epoch", "cache_split", "training_plan", "log_training_plan"]

logger = logging.getLogger(__name__)


def resolve_patches_per_epoch(value, shapes_yx, patch_size: int) -> int:
    """``patches_per_epoch`` of the config: a number, or ``null`` for the paper's rule (as many patches as
    ``patch_size`` tiles with 10 % overlap cover the training stacks: 370 for the paper's 11 images)."""
    value = optional(value)
    if value is None:
        return paper_patches_per_epoch(shapes_yx, int(patch_size))
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not str(value).strip().isdigit() \
            or int(value) < 1:
        raise input_error("config: patches_per_epoch", f"got {value!r}",
                          "give a whole number of patches (>= 1), or null for the paper's rule (tiles of the "
                          "training stacks)")
    return int(value)


def cache_split(pipeline: Compose) -> tuple[list[str], list[str]]:
    """Names of the steps a ``CacheDataset`` computes once per stack, and of those it runs on every draw: the split
    is MONAI's own rule (at the first random step, or the first callable that is not a ``Transform``; a nested
    ``Compose`` counts as random, so the pipeline must be flat)."""
    first = pipeline.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
    names = [type(t).__name__ for t in pipeline.transforms]
    first = len(names) if first is None else first
    return names[:first], names[first:]


def training_plan(n_stacks: int, patches_per_epoch: int, batch_size: int, samples_per_image: int, epochs: int,
                  world_size: int = 1) -> dict[str, int]:
    """Steps and patches in the units the config keys are stated in (per process under DDP)."""
    draws = math.ceil(patches_per_epoch / samples_per_image)
    draws_per_process = math.ceil(draws / world_size)
    steps = math.ceil(draws_per_process / (batch_size // samples_per_image))
    return {"stacks": n_stacks, "patches_per_step": batch_size, "patches_per_epoch": draws * samples_per_image,
            "steps_per_epoch": steps, "epochs": epochs, "steps": steps * epochs, "world_size": world_size}


def log_training_plan(pipeline: Compose, dataloader, n_stacks: int, patches_per_epoch: int, batch_size: int,
                      samples_per_image: int, epochs: int, patches_per_epoch_setting=None) -> dict[str, int]:
    """Log the plan (and check it against the data loader the trainer really uses); returns it."""
    sampler = getattr(dataloader, "sampler", None)
    world_size = getattr(sampler, "num_replicas", 1)
    plan = training_plan(n_stacks, patches_per_epoch, batch_size, samples_per_image, epochs, world_size)
    if len(dataloader) != plan["steps_per_epoch"]:  # the config's loader must agree with its own keys
        raise RuntimeError(f"data loader has {len(dataloader)} steps per epoch, the plan {plan['steps_per_epoch']}")
    cached, per_draw = cache_split(pipeline)
    logger.info("training plan: %(patches_per_step)d patches per step (batch_size), %(steps_per_epoch)d steps per "
                "epoch = %(patches_per_epoch)d patches drawn from %(stacks)d stacks, %(epochs)d epochs = %(steps)d "
                "steps" + (" on %(world_size)d processes" if world_size > 1 else ""), plan)
    if optional(patches_per_epoch_setting) is None:
        logger.info("patches_per_epoch = %d by the paper's rule: the patch_size tiles (10%% overlap) of the training "
                    "stacks", patches_per_epoch)
    logger.info("cached once per stack: %s", ", ".join(cached) or "nothing")
    logger.info("run on every draw (%d patch(es) each): %s", samples_per_image, ", ".join(per_draw) or "nothing")
    return plan
