"""Data for deep mean-field ResNets (Barboni, Peyré & Vialard 2024): maps R^d → R^d.

Two sources, both documented in ``docs/resnet.md``:

- :func:`near_identity`: targets ``y = x + δ g(x)`` with ``g`` a fixed smooth
  random map (random Fourier features), normalised so that
  ``(1/N) Σᵢ |g(xⁱ)|² = 1``. At an initialisation with ``u = 0`` the ResNet is
  the identity, so ``L(μ₀) = δ²/2`` exactly: δ sets the initial risk that the
  convergence theorem needs small.
- :func:`digits`: scikit-learn's 8 × 8 digits (shipped with the package, no
  download), embedded linearly in R^d, with class targets in R^d and a linear
  read-out (:func:`classify`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from wgflow.errors import require, require_positive
from wgflow.init import on_sphere

INPUT_LAWS = ("sphere", "gaussian")
PROJECTIONS = ("pca", "random")


@dataclasses.dataclass(frozen=True)
class ResNetDataset:
    """Training pairs ``X, Y`` (N, d) and, for classification, labels, class targets and a test split.

    ``targets`` (C, d): the target vector of each class (``Y[i] = targets[labels[i]]``).
    ``info``: how the set was made (parameters of the map or of the embedding).
    """

    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray | None = None
    targets: np.ndarray | None = None
    X_test: np.ndarray | None = None
    Y_test: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


def _positive_int(v, field: str) -> None:
    require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0, field, "must be a positive integer", value=v)


def random_fourier_map(key, d: int, n_features: int = 64, bandwidth: float = 1.0, dtype=None):
    """A fixed smooth random map ``g(x) = √(2/F) A cos(Ω x + φ)`` from R^d to R^d.

    ``Ω`` (F, d) has N(0, bandwidth²) entries, ``φ`` ~ U[0, 2π], ``A`` (d, F) has N(0, 1)
    entries; then each coordinate of g has variance ≈ 1 over x. Returns the function.
    """
    _positive_int(d, "data.d")
    _positive_int(n_features, "data.n_features")
    require_positive(bandwidth, "data.bandwidth")
    dtype = dtype or jnp.result_type(float)
    k1, k2, k3 = jax.random.split(key, 3)
    Om = bandwidth * jax.random.normal(k1, (n_features, d), dtype)
    phi = jax.random.uniform(k2, (n_features,), dtype, 0.0, 2 * math.pi)
    A = jax.random.normal(k3, (d, n_features), dtype)
    scale = math.sqrt(2.0 / n_features)

    def g(X):
        return scale * jnp.cos(X @ Om.T + phi) @ A.T

    return g


def near_identity(
    key,
    N: int,
    d: int,
    delta: float,
    *,
    n_features: int = 64,
    bandwidth: float = 1.0,
    inputs: str = "sphere",
    dtype=None,
) -> ResNetDataset:
    """``N`` pairs ``(x, x + δ g(x))``, inputs uniform on the unit sphere of R^d (or N(0, I_d/d)).

    ``g`` is :func:`random_fourier_map` rescaled so that ``(1/N) Σᵢ |g(xⁱ)|² = 1``; hence
    at an initialisation with ``u = 0`` the risk is exactly ``L(μ₀) = δ²/2``.
    """
    _positive_int(N, "data.N")
    _positive_int(d, "data.d")
    require_positive(delta, "data.delta", allow_zero=True)
    require(inputs in INPUT_LAWS, "data.inputs", f"unknown input law {inputs!r}", f"use one of {list(INPUT_LAWS)}")
    dtype = dtype or jnp.result_type(float)
    kx, kg = jax.random.split(key)
    if inputs == "sphere":
        X = on_sphere(kx, N, d, 1.0, dtype)
    else:
        X = jax.random.normal(kx, (N, d), dtype) / math.sqrt(d)
    G = random_fourier_map(kg, d, n_features, bandwidth, dtype)(X)
    G = G / jnp.sqrt(jnp.mean(jnp.sum(G * G, axis=1)))
    X, Y = np.asarray(X), np.asarray(X + delta * G)
    info = dict(
        kind="near_identity",
        delta=float(delta),
        n_features=n_features,
        bandwidth=float(bandwidth),
        inputs=inputs,
        initial_risk_at_identity=0.5 * float(delta) ** 2,
    )
    return ResNetDataset(X, Y, info=info)


def class_targets(n_classes: int, d: int, scale: float = 1.0, key=None, dtype=np.float64) -> np.ndarray:
    """Target vector of each class in R^d, shape (C, d), all of norm ``scale``.

    ``d ≥ C``: one-hot vectors ``scale·e_c`` (first C coordinates). ``d < C``: C unit
    vectors drawn from a fixed Gaussian (``key``, default PRNGKey(0)) and normalised.
    """
    _positive_int(n_classes, "data.n_classes")
    _positive_int(d, "data.d")
    if d >= n_classes:
        T = np.eye(n_classes, d)
    else:
        key = jax.random.PRNGKey(0) if key is None else key
        T = np.asarray(jax.random.normal(key, (n_classes, d)), dtype=np.float64)
        T = T / np.linalg.norm(T, axis=1, keepdims=True)
    return (scale * T).astype(dtype)


def classify(states: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear read-out: the class whose target has the largest inner product with the final state."""
    return np.argmax(np.asarray(states) @ np.asarray(targets).T, axis=1)


def digits(
    key,
    d: int,
    *,
    n_train: int = 500,
    n_test: int = 500,
    projection: str = "pca",
    input_scale: float = 1.0,
    target_scale: float = 1.0,
    dtype=None,
) -> ResNetDataset:
    """scikit-learn's digits (1797 images of 8 × 8 pixels, 10 classes) embedded in R^d.

    - Pixels are divided by 16 (to [0, 1]); the images are shuffled with ``key`` and split
      into ``n_train`` training and ``n_test`` test images.
    - Inputs: centred by the training mean, projected to R^d by ``projection`` — ``"pca"``
      (the top-d principal axes of the training images) or ``"random"`` (a fixed Gaussian
      64 × d matrix) — then scaled so that the mean training norm is ``input_scale``.
    - Targets: ``class_targets(10, d, target_scale)`` of each label.
    - Read-out: :func:`classify` on the final state ``x(1)``.
    """
    from sklearn.datasets import load_digits

    _positive_int(d, "data.d")
    _positive_int(n_train, "data.n_train")
    require(isinstance(n_test, (int, np.integer)) and n_test >= 0, "data.n_test", "must be an integer >= 0", value=n_test)
    require(projection in PROJECTIONS, "data.projection", f"unknown projection {projection!r}", f"use one of {list(PROJECTIONS)}")
    require(projection != "pca" or d <= 64, "data.d", "a PCA embedding has at most 64 dimensions", "use d <= 64 or projection='random'", d)
    require_positive(input_scale, "data.input_scale")
    require_positive(target_scale, "data.target_scale")
    raw = load_digits()
    total = raw.data.shape[0]
    require(n_train + n_test <= total, "data.n_train", f"n_train + n_test = {n_train + n_test} > {total} images", "ask for fewer images")
    dtype = np.dtype(dtype or jnp.result_type(float))
    kperm, kproj = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(kperm, total))
    imgs = raw.data[perm].astype(np.float64) / 16.0
    labels = raw.target[perm].astype(np.int64)
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    mean = imgs[tr].mean(axis=0)
    Z = imgs - mean
    if projection == "pca":
        _, _, Vt = np.linalg.svd(Z[tr], full_matrices=False)
        P = Vt[:d].T  # (64, d) orthonormal columns
        if P.shape[1] < d:  # fewer training images than d: pad with zero columns
            P = np.concatenate([P, np.zeros((64, d - P.shape[1]))], axis=1)
    else:
        P = np.asarray(jax.random.normal(kproj, (64, d), jnp.float64)) / math.sqrt(64)
    E = Z @ P
    E = E * (input_scale / np.mean(np.linalg.norm(E[tr], axis=1)))
    T = class_targets(10, d, target_scale)
    info = dict(kind="digits", projection=projection, input_scale=float(input_scale), target_scale=float(target_scale), projection_matrix=P, mean=mean)
    return ResNetDataset(
        X=E[tr].astype(dtype),
        Y=T[labels[tr]].astype(dtype),
        labels=labels[tr],
        targets=T.astype(dtype),
        X_test=E[te].astype(dtype),
        Y_test=T[labels[te]].astype(dtype),
        labels_test=labels[te],
        info=info,
    )
