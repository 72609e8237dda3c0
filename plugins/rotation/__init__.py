"""Rotation plugins: one module per kind of credential (entry-point group `rotator.plugins`)."""
