"""The internal image event and the normalisers that produce it from registry payloads."""
