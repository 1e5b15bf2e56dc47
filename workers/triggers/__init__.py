"""Triggers: deployment updates and signed webhooks fired by image events."""
