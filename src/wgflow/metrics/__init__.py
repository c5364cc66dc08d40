"""Distances and diagnostics: W₂ and the Sinkhorn divergence between measures (``transport``)."""

from wgflow.metrics.transport import DistanceResult, sinkhorn_divergence, w2

__all__ = ["DistanceResult", "sinkhorn_divergence", "w2"]
