"""Models whose parameters are measures over neurons: the deep mean-field ResNet and its NODE (``resnet``)."""

from wgflow.models.resnet import (
    FEATURE_LAWS,
    INITS,
    INTERPOLATIONS,
    Adjoint,
    ResNetObjective,
    ResNetParams,
    adjoint_gradient,
    discretise,
    grad_norm_sq,
    init_resnet,
    linear_interpolation,
    make_resnet_objective,
    node_forward,
    piecewise_constant,
    resnet_forward,
    resnet_loss,
    resnet_states,
)

__all__ = [
    "FEATURE_LAWS", "INITS", "INTERPOLATIONS", "Adjoint", "ResNetObjective", "ResNetParams", "adjoint_gradient",
    "discretise", "grad_norm_sq", "init_resnet", "linear_interpolation", "make_resnet_objective", "node_forward",
    "piecewise_constant", "resnet_forward", "resnet_loss", "resnet_states",
]
