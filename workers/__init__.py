"""registry-workers: event-driven automation for container registries."""

__version__ = "0.1.0"
