"""Maintenance commands applied by workers: sweeping old history."""
