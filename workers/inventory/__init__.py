"""Inventory: what each region's registry holds, kept from push, delete and pull events."""
