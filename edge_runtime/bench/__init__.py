"""Measuring inference: shared by ``edge-runtime bench`` and ``edge-convert --quantize auto``."""
