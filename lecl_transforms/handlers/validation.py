"""Validation at the end of every training run, and attaching handlers that refer to their own engine."""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["FinalValidationHandler", "attach_handlers"]


class FinalValidationHandler:
    """Validate once more when training ends on an epoch that ``interval`` skipped (MONAI's ``ValidationHandler``
    validates every ``interval`` epochs only), so every run ends with validation metrics and a best model
    (``model.pt``), however few its epochs (a 1-epoch check, a short fine-tuning in MONAI Label).

    Args:
        validator: the evaluator (``SupervisedEvaluator``) ``ValidationHandler`` runs.
        interval: that handler's ``interval`` (epochs).
    """

    def __init__(self, validator: Engine, interval: int):
        self.validator, self.interval = validator, int(interval)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval:
            self.validator.run(engine.state.epoch)


def attach_handlers(engine: Engine, handlers) -> list:
    """Attach each of ``handlers`` to ``engine`` in order, skipping the ``None`` of a config component that is
    ``_disabled_``: for handlers that refer to the engine themselves (checkpoints that save or load the trainer),
    which cannot be among the engine's own constructor arguments. Returns the handlers attached."""
    attached = [h for h in handlers if h is not None]
    for handler in attached:
        handler.attach(engine)
    return attached
