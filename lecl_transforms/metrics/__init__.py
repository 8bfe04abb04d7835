"""Metrics: the click-based validation metric."""

from .click import ClickMetric

__all__ = ["ClickMetric"]
