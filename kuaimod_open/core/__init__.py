"""Shared building blocks with no stage of their own (score calibration, ...); they import no stage."""
