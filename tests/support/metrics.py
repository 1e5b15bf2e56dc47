"""Read the Prometheus metrics of the service running in the test's process."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of one series (0 when it was never touched): compare before and after."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
