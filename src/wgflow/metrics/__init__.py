"""Distances and diagnostics: W₂ and the Sinkhorn divergence between measures (``transport``); λ₀, PL, D_COT and rates of ResNets (``resnet``)."""

from wgflow.metrics.resnet import (
    DCOT,
    DCOT_MODES,
    PL_CONSTANT,
    RateFit,
    dcot,
    fitted_rate,
    lambda0,
    lambda_min_mean_kernel,
    layer_kernels,
    layer_lambda_min,
)
from wgflow.metrics.transport import DistanceResult, sinkhorn_divergence, w2

__all__ = ["DistanceResult", "sinkhorn_divergence", "w2"]
__all__ += [
    "DCOT",
    "DCOT_MODES",
    "PL_CONSTANT",
    "RateFit",
    "dcot",
    "fitted_rate",
    "lambda0",
    "lambda_min_mean_kernel",
    "layer_kernels",
    "layer_lambda_min",
]
