"""Tests of the pure policy layer: interval, retry and pools."""
