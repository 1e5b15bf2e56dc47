"""Retention: which image digests a retention policy deletes (``rules`` parses, ``plan`` decides)."""
