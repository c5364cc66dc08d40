"""Exact enumeration of the activation patterns ``D = diag(1[X g ≥ 0])`` for rank(X) ≤ 3.

The hyperplanes ``{g : x_j·g = 0}`` cut R^d into open polyhedral cones, the
*chambers* of a central hyperplane arrangement; ``g ↦ 1[X g ≥ 0]`` is constant
on each chamber, and every chamber has its own sign vector. On the closure of a
chamber, ``K_D = {u : (2D − I) X u ≥ 0}``, the network is linear:
``relu(X u) = D X u``. The closed chambers cover R^d, so the patterns of the
chambers are all the convex program of Pilanci & Ergen (2020) needs (patterns
of lower-dimensional cells have cones that are faces of these).

Counting (k distinct hyperplanes, i.e. k distinct lines through the origin
among the nonzero x_j; rows that are multiples of each other, with either
sign, give the same hyperplane; zero rows give none):

* rank 1: 2 chambers; rank 2: 2k chambers (the 2k arcs between the 2k
  directions orthogonal to the x_j on the circle);
* rank 3: Euler's formula on the sphere. Every line L where t_L ≥ 2 planes meet
  is a pair of antipodal vertices, each plane's great circle is cut into as many
  edges as it has vertices, so V = 2·#lines, E = 2 Σ_L t_L and the number of
  chambers is F = 2 − V + E = 2 + 2 Σ_L (t_L − 1). In general position
  (t_L = 2 for all C(k, 2) lines) this is k² − k + 2;
* in general position in rank r: 2 Σ_{i<r} C(k − 1, i) (Cover 1965; Zaslavsky 1975).

The enumerator checks its count against the exact formula for the arrangement
it found (the Euler count above) and refuses to return an inconsistent set.

Each chamber also comes with the generators of its closed cone: in rank 3 its
extreme rays are the arrangement's lines ±L it touches; in rank 2 the two arc
end points; a rank-deficient X (e.g. all x_j in a plane of R^3) adds the lines
of its null space, with both signs, to every cone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from wgflow.errors import InputError, require
from wgflow.resources import Need, check_needs

MAX_EXACT_RANK = 3


def regions_in_general_position(k: int, rank: int) -> int:
    """Chambers of k central hyperplanes in general position in R^rank: ``2 Σ_{i<rank} C(k − 1, i)``.

    rank 2: ``2k``; rank 3: ``k² − k + 2``. With no hyperplane (k = 0) there is one chamber, R^rank.
    """
    if k == 0:
        return 1
    return 2 * sum(math.comb(k - 1, i) for i in range(rank))


#: bytes per (pattern, data point): the pattern matrix (bool), its sign table and the program's float copy
BYTES_PER_PATTERN_ENTRY = 18
#: bytes per pair of data points when the rows' hyperplanes are deduplicated (angles, sines, masks)
BYTES_PER_PAIR = 40


def _refuse_large(nbytes: float, item: str, n: int, growth: str) -> None:
    fix = f"use fewer data points (this grows like {growth}), or the sampled bounds for large data (dual_bound(...), global_minimum(..., patterns='sampled'))"
    check_needs([Need(item, nbytes, "data.X", fix)], f"the exact global minimum of {n:,} data points")


def pattern_memory(n: int, rank: int) -> float:
    """Bytes the exact program needs for the activation patterns of ``n`` data points of rank
    ``rank``: at most ``regions_in_general_position(n, rank)`` patterns × n entries."""
    return float(regions_in_general_position(n, rank)) * n * BYTES_PER_PATTERN_ENTRY


@dataclasses.dataclass(frozen=True, eq=False)
class Patterns:
    """The chambers of the arrangement of X and, for each used pattern, the generators of its cone.

    ``D``: (P, n) bool, ``D[i, j] = 1[x_j·g ≥ 0]`` for g in chamber i (a zero row has 1).
    The all-zero pattern (D X = 0, a neuron that never fires) is left out of ``D``:
    it contributes nothing to any fit.

    ``generators`` (G, d) and ``owner`` (G,): the cone of pattern i is
    ``K_i = {Σ a_g g : a ≥ 0, owner[g] = i}`` (unit vectors). ``generator_id`` (G,)
    names each generator across patterns (neighbouring chambers share their rays);
    ``null_generator`` marks the ± null-space lines of a rank-deficient X (a neuron's
    component there changes no output: the ℓ2 program can leave them out).

    Counts: ``n_regions`` chambers in all (with the all-zero one if present), equal
    to ``expected_regions`` from the exact formula for this arrangement, and to
    ``general_position_regions`` when no three hyperplanes share a line.

    The remaining fields describe the chambers in the coordinates of the row
    space of X (``basis`` (d, r), orthonormal; the identity when X has full rank),
    where each cone is pointed: ``normals`` (k, r) of the distinct hyperplanes, the
    chamber ``signs`` (P, k), the pointed ``rays`` (R, r) with ``ray_owner``, all
    pairs of rays of one chamber ``pair_a``/``pair_b`` (indices into ``rays``), the
    ``null_basis`` (d, d − r) whose lines every cone contains, and ``edges`` (E, 2): the
    pairs of patterns whose chambers share a facet (found around each line, where
    consecutive chambers are separated by one plane).
    """

    D: np.ndarray
    generators: np.ndarray
    owner: np.ndarray
    generator_id: np.ndarray
    null_generator: np.ndarray
    n_regions: int
    expected_regions: int
    general_position_regions: int
    n_hyperplanes: int
    rank: int
    has_zero_pattern: bool
    basis: np.ndarray
    null_basis: np.ndarray
    normals: np.ndarray
    signs: np.ndarray
    rays: np.ndarray
    ray_owner: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    edges: np.ndarray

    @property
    def n_patterns(self) -> int:
        """Patterns used by the convex program (the all-zero one excluded)."""
        return self.D.shape[0]

    @property
    def general_position(self) -> bool:
        return self.n_regions == self.general_position_regions

    def cone(self, i: int) -> np.ndarray:
        """Generators (p_i, d) of the closed cone of pattern i."""
        return self.generators[self.owner == i]


# --------------------------------------------------------------------------- hyperplanes


def _hyperplanes(X: np.ndarray, tol: float):
    """Distinct hyperplanes of the nonzero rows: (unit normals (k, d), plane of each row or -1, orientation ±1)."""
    n = X.shape[0]
    norms = np.linalg.norm(X, axis=1)
    scale = norms.max() if n else 0.0
    nonzero = norms > tol * scale if scale > 0 else np.zeros(n, bool)
    plane = np.full(n, -1, dtype=np.int64)
    orient = np.ones(n)
    idx = np.flatnonzero(nonzero)
    if idx.size == 0:
        return np.zeros((0, X.shape[1])), plane, orient
    _refuse_large(BYTES_PER_PAIR * float(idx.size) ** 2, f"the angles between {idx.size:,} rows", idx.size, "n²")
    U = X[idx] / norms[idx, None]
    # two rows give the same hyperplane iff they are parallel (either sign): sin(angle) ≤ tol
    C = np.clip(np.abs(U @ U.T), 0.0, 1.0)
    sin = np.sqrt(np.maximum(0.0, 1.0 - C * C))
    # 1 − cos² loses precision near 1: measure the sine directly as |u_a − (u_a·u_b) u_b|
    close = C > 1.0 - 1e-6
    if close.any():
        a, b = np.nonzero(close)
        G = U @ U.T
        sin[a, b] = np.linalg.norm(U[a] - G[a, b, None] * U[b], axis=1)
    same = sin <= tol
    ncomp, label = connected_components(csr_matrix(same), directed=False)
    first = np.array([np.flatnonzero(label == c)[0] for c in range(ncomp)])
    normals = U[first]
    plane[idx] = label
    orient[idx] = np.where(np.sum(U * normals[label], axis=1) >= 0, 1.0, -1.0)
    return normals, plane, orient


# --------------------------------------------------------------------------- chambers in rank 1, 2, 3


def unique_rows(B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a boolean matrix (sorted) and the inverse map, via packed 64-bit words."""
    m, k = B.shape
    if m == 0:
        return B, np.zeros(0, np.int64)
    packed = np.packbits(B, axis=1)
    pad = (-packed.shape[1]) % 8
    words = np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(">u8")
    order = np.lexsort(words.T[::-1])
    w = words[order]
    new = np.ones(m, bool)
    new[1:] = np.any(w[1:] != w[:-1], axis=1)
    group = np.cumsum(new) - 1
    inverse = np.empty(m, np.int64)
    inverse[order] = group
    return B[order[new]], inverse


def _circle_chambers(normals2: np.ndarray):
    """Chambers of k ≥ 1 distinct lines through 0 in R^2.

    Returns signs (2k, k), the arc end points (2k, 2, 2) and their indices (2k, 2) among the 2k directions.
    """
    k = normals2.shape[0]
    base = np.arctan2(normals2[:, 0], -normals2[:, 1])  # direction of the line {g : n·g = 0}
    angles = np.sort(np.mod(np.concatenate([base, base + np.pi]), 2 * np.pi))
    nxt = np.roll(angles, -1)
    nxt[-1] += 2 * np.pi
    mid = 0.5 * (angles + nxt)
    m = np.stack([np.cos(mid), np.sin(mid)], axis=1)
    signs = np.where(m @ normals2.T > 0, 1, -1).astype(np.int8)
    ends = np.stack([np.stack([np.cos(angles), np.sin(angles)], 1), np.stack([np.cos(nxt), np.sin(nxt)], 1)], axis=1)
    idx = np.arange(2 * k)
    return signs, ends, np.stack([idx, np.roll(idx, -1)], axis=1)


def _orthonormal_complement(v: np.ndarray) -> np.ndarray:
    """Two unit vectors (2, 3) spanning v^⊥."""
    _, _, Vt = np.linalg.svd(v[None, :])
    return Vt[1:]


def _sphere_chambers(normals: np.ndarray, tol: float):
    """Chambers of k distinct planes through 0 in R^3 spanning R^3.

    Returns (signs (F, k), rays list of (p_i, 3) arrays, ray ids list, expected count from Euler).
    Every chamber is a pointed cone whose extreme rays are lines where ≥ 2 planes meet;
    around each such line ±v, the planes through it cut a small circle into 2t local
    chambers, whose sign vectors are found in the plane v^⊥.
    """
    k = normals.shape[0]
    ia, ib = np.triu_indices(k, 1)
    V = np.cross(normals[ia], normals[ib])
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    inc = np.abs(V @ normals.T) <= tol  # (pairs, k): planes through the line of the pair
    inc[np.arange(len(ia)), ia] = True
    inc[np.arange(len(ia)), ib] = True
    cnt = inc.sum(axis=1)
    line_dir_list = [V[p] for p in np.flatnonzero(cnt == 2)]  # general position: a pair's own line
    line_sets = [np.array([ia[p], ib[p]]) for p in np.flatnonzero(cnt == 2)]
    covered = np.zeros((k, k), bool)
    for p in np.flatnonzero(cnt > 2):  # ties: one line shared by all the planes through it
        a, b = ia[p], ib[p]
        if covered[a, b]:
            continue
        S = np.flatnonzero(inc[p])
        v = np.linalg.svd(normals[S])[2][-1]  # the common line of all its planes
        covered[np.ix_(S, S)] = True
        line_dir_list.append(v)
        line_sets.append(S)
    line_dirs = np.array(line_dir_list)
    expected = 2 + 2 * sum(len(S) - 1 for S in line_sets)
    base = np.where(line_dirs @ normals.T > 0, 1, -1).astype(np.int8)  # (L, k), for +v

    rows, ray_vecs, ray_ids = [], [], []
    # chambers consecutive around a line share a facet: record those pairs (row indices) as edges
    edge_rows, nrow = [], 0
    simple = np.array([len(S) == 2 for S in line_sets])
    if simple.any():  # general-position lines: the 4 local chambers are the 4 sign pairs
        li = np.flatnonzero(simple)
        pa = np.array([line_sets[i][0] for i in li])
        pb = np.array([line_sets[i][1] for i in li])
        m = len(li)
        for o in (1, -1):
            block = {}
            for sa in (1, -1):
                for sb in (1, -1):
                    s = o * base[li]
                    s[np.arange(m), pa] = sa
                    s[np.arange(m), pb] = sb
                    rows.append(s)
                    ray_vecs.append(o * line_dirs[li])
                    ray_ids.append(2 * li + (o < 0))
                    block[sa, sb] = nrow + np.arange(m)
                    nrow += m
            for u, v in (((1, 1), (1, -1)), ((1, 1), (-1, 1)), ((-1, -1), (1, -1)), ((-1, -1), (-1, 1))):
                edge_rows.append(np.stack([block[u], block[v]], axis=1))
    for i in np.flatnonzero(~simple):
        S = line_sets[i]
        E = _orthonormal_complement(line_dirs[i])
        local = normals[S] @ E.T
        local /= np.linalg.norm(local, axis=1, keepdims=True)
        loc_signs, _, _ = _circle_chambers(local)
        for o in (1, -1):
            s = np.repeat(o * base[i][None, :], loc_signs.shape[0], axis=0)
            s[:, S] = loc_signs
            rows.append(s)
            ray_vecs.append(np.repeat(o * line_dirs[i][None, :], s.shape[0], axis=0))
            ray_ids.append(np.full(s.shape[0], 2 * i + (o < 0)))
            t = len(s)  # the local arcs around the line, in cyclic order
            edge_rows.append(nrow + np.stack([np.arange(t), (np.arange(t) + 1) % t], axis=1))
            nrow += t
    rows_all = np.concatenate(rows)
    ray_vecs_all = np.concatenate(ray_vecs)
    ray_ids_all = np.concatenate(ray_ids)
    uniq, inverse = unique_rows(rows_all > 0)
    edges = inverse[np.concatenate(edge_rows)]
    return np.where(uniq, 1, -1).astype(np.int8), ray_vecs_all, ray_ids_all, inverse, expected, edges


# --------------------------------------------------------------------------- public


def _check_X(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    require(X.ndim == 2, "data.X", f"must be a 2-D array (n, d), got shape {X.shape}", "reshape X to (n, d)")
    require(X.shape[0] > 0 and X.shape[1] > 0, "data.X", f"is empty (shape {X.shape})", "give at least one sample")
    bad = ~np.isfinite(X)
    if bad.any():
        raise InputError("data.X", f"contains {int(bad.sum())} NaN/inf values (first at index {np.argwhere(bad)[0].tolist()})", "clean or drop those rows")
    return X


def effective_rank(X, tol: float = 1e-10) -> int:
    """Rank of the nonzero, normalised rows of X (what the enumeration's cost depends on)."""
    X = _check_X(X)
    normals, _, _ = _hyperplanes(X, tol)
    if normals.shape[0] == 0:
        return 0
    s = np.linalg.svd(normals, compute_uv=False)
    return int(np.sum(s > tol * s[0] * max(normals.shape)))


def enumerate_patterns(X, *, tol: float = 1e-10) -> Patterns:
    """All activation patterns of X with their cones, exactly, when rank(X) ≤ 3.

    ``d`` counts a bias column (:func:`wgflow.data.with_bias`): inputs in R^2 with
    a bias are rank 3. Rows parallel within ``tol`` (sine of the angle) give one
    hyperplane, rows of norm ≤ ``tol``·max norm count as zero, and a plane
    within ``tol`` of a line where two others meet passes through it.

    Raises :class:`InputError` when rank(X) > 3: the number of patterns grows
    like n^{rank − 1} and their cones have no closed form here; the sampled
    dual bound (:func:`wgflow.optimum.dual_bound`, a heuristic lower estimate)
    and the sampled-pattern upper bound (``global_minimum(..., patterns="sampled")``)
    are what is available then.
    """
    X = _check_X(X)
    n, d = X.shape
    normals_full, plane, orient = _hyperplanes(X, tol)
    k = normals_full.shape[0]
    if k:
        # the full Vt (d × d) without the k × k U of a full SVD (k = n: 298 GiB for n = 2·10⁵)
        _, s, Vt = np.linalg.svd(normals_full, full_matrices=k < d)
        r = int(np.sum(s > tol * s[0] * max(normals_full.shape)))
    else:
        r, Vt = 0, np.eye(d)
    if 0 < r <= MAX_EXACT_RANK:
        _refuse_large(pattern_memory(k, r), f"{regions_in_general_position(k, r):,} patterns × {n:,} data points", n, f"n^{r}")
    if r > MAX_EXACT_RANK:
        raise InputError(
            "data.X",
            f"exact enumeration of activation patterns needs rank(X) ≤ {MAX_EXACT_RANK} (d counts the bias column); these inputs have rank {r} (d = {d})",
            "for d > 3 only bounds are available: dual_bound(...) gives a sampled dual lower estimate "
            "(heuristic, not certified) and global_minimum(..., patterns='sampled') an upper bound from sampled patterns",
        )
    if r == d:
        basis, null = np.eye(d), np.zeros((d, 0))
    else:
        basis, null = Vt[:r].T, Vt[r:].T
    normals = normals_full @ basis
    if k:
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)

    # chambers in the reduced coordinates: signs (F, k) and pointed rays
    # rays as flat arrays (vectors, ids, chamber), sorted by chamber
    if r == 0:
        signs = np.zeros((1, 0), np.int8)
        ray_vecs, ray_ids, ray_ch = np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64)
        expected, edges = 1, np.zeros((0, 2), np.int64)
    elif r == 1:
        e = np.sign(normals[:, 0]).astype(np.int8)  # every normal is ±1 in 1-D
        signs = np.stack([e, -e])
        ray_vecs, ray_ids, ray_ch = np.array([[1.0], [-1.0]]), np.array([0, 1]), np.array([0, 1])
        expected, edges = 2, np.array([[0, 1]])
    elif r == 2:
        signs, ends, rid = _circle_chambers(normals)
        ray_vecs, ray_ids, ray_ch = ends.reshape(-1, 2), rid.reshape(-1), np.repeat(np.arange(len(signs)), 2)
        expected, edges = 2 * k, np.stack([np.arange(2 * k), (np.arange(2 * k) + 1) % (2 * k)], axis=1)
    else:
        signs, ray_vecs, ray_ids, inverse, expected, edges = _sphere_chambers(normals, tol)
        order = np.argsort(inverse, kind="stable")
        ray_vecs, ray_ids, ray_ch = ray_vecs[order], ray_ids[order], inverse[order]
    n_regions = len(signs)
    if n_regions != expected:
        raise InputError(
            "data.X",
            f"the pattern enumeration found {n_regions} chambers where the arrangement's exact count is {expected}: "
            f"the inputs are too close to a degenerate configuration for tol = {tol:g}",
            "deduplicate nearly parallel rows, or raise/lower tol",
        )

    # patterns in data space
    Dall = np.ones((n_regions, n), bool)
    nz = plane >= 0
    if k:
        Dall[:, nz] = (signs[:, plane[nz]] * orient[nz][None, :]) > 0
    active = Dall[:, nz].any(axis=1) if nz.any() else np.zeros(n_regions, bool)
    has_zero = bool((~active).any())
    keep = np.flatnonzero(active)

    # generators in data coordinates: pointed rays mapped back, plus ± the null space
    P = keep.size
    new_index = np.full(n_regions, -1, np.int64)
    new_index[keep] = np.arange(P)
    sel = new_index[ray_ch] >= 0
    rays, ray_owner, rid = ray_vecs[sel], new_index[ray_ch[sel]], ray_ids[sel]
    n_ray_ids = int(ray_ids.max()) + 1 if ray_ids.size else 0
    nulls = np.array([null[:, j] * s for j in range(null.shape[1]) for s in (1.0, -1.0)]).reshape(-1, d)
    null_ids = np.arange(n_ray_ids, n_ray_ids + len(nulls))
    gens = np.concatenate([rays @ basis.T, np.tile(nulls, (P, 1))])
    owner = np.concatenate([ray_owner, np.repeat(np.arange(P), len(nulls))])
    gid_raw = np.concatenate([rid, np.tile(null_ids, P)])
    order = np.argsort(owner, kind="stable")  # contiguous per pattern
    generators, owner, gid_raw = gens[order], owner[order], gid_raw[order]
    if generators.size:
        generators /= np.linalg.norm(generators, axis=1, keepdims=True)
    _, gid = np.unique(gid_raw, return_inverse=True)
    # facet-sharing pairs among the kept patterns
    edges = new_index[edges]
    edges = np.sort(edges[(edges >= 0).all(axis=1) & (edges[:, 0] != edges[:, 1])], axis=1)
    edges = np.unique(edges, axis=0) if len(edges) else np.zeros((0, 2), np.int64)
    # all pairs of rays of one chamber (its 2-D faces are among them)
    counts = np.bincount(ray_owner, minlength=P)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pa, pb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(counts[counts >= 2]):
        a, b = np.triu_indices(int(c), 1)
        st = starts[counts == c][:, None]
        pa.append((st + a).reshape(-1))
        pb.append((st + b).reshape(-1))
    return Patterns(
        D=Dall[keep],
        generators=generators,
        owner=np.asarray(owner, np.int64),
        generator_id=gid.reshape(-1).astype(np.int64),
        null_generator=np.isin(gid_raw, null_ids),
        n_regions=n_regions,
        expected_regions=expected,
        general_position_regions=regions_in_general_position(k, r) if r else 1,
        n_hyperplanes=k,
        rank=r,
        has_zero_pattern=has_zero,
        basis=basis,
        null_basis=null,
        normals=normals,
        signs=signs[keep],
        rays=rays,
        ray_owner=ray_owner,
        pair_a=np.concatenate(pa).astype(np.int64),
        pair_b=np.concatenate(pb).astype(np.int64),
        edges=edges.astype(np.int64),
    )


def sample_patterns(X, num: int, key: int | np.random.Generator = 0) -> np.ndarray:
    """Distinct patterns ``1[X g ≥ 0]`` for ``num`` Gaussian g (any d), the all-zero one left out.

    A subset of the true patterns: the convex program over them is a restriction,
    so its value is an *upper* bound on P* (Pilanci & Ergen's practical variant).
    """
    X = _check_X(X)
    rng = key if isinstance(key, np.random.Generator) else np.random.default_rng(key)
    n = X.shape[0]
    out = []
    for start in range(0, num, 200_000):
        G = rng.standard_normal((X.shape[1], min(200_000, num - start)))
        packed = np.ascontiguousarray(np.packbits(X @ G >= 0, axis=0).T)  # one byte string per g
        out.append(np.unique(packed, axis=0))
    D = np.unpackbits(np.unique(np.concatenate(out), axis=0), axis=1, count=n).astype(bool)
    nonzero_rows = np.linalg.norm(X, axis=1) > 0
    return D[D[:, nonzero_rows].any(axis=1)] if nonzero_rows.any() else D[:0]


def chamber_adjacency(pat: Patterns) -> np.ndarray:
    """Pairs (i, j), i < j, of patterns whose chambers share a facet (recorded by the enumeration)."""
    return pat.edges


def chamber_adjacency_by_signs(pat: Patterns, tol: float = 1e-9) -> np.ndarray:
    """The same pairs recomputed from the sign vectors (an independent check of ``pat.edges``):
    two chambers share a facet when their signs differ in exactly one bounding hyperplane.

    A hyperplane bounds chamber i when ≥ rank − 1 of its extreme rays lie on it; the
    neighbour across it has that one sign flipped (absent if it is the all-zero pattern).
    """
    P, k, r = pat.n_patterns, pat.n_hyperplanes, pat.rank
    if P < 2 or k == 0:
        return np.zeros((0, 2), np.int64)
    words = _words(pat.signs > 0)
    on = csr_matrix(np.abs(pat.rays @ pat.normals.T) <= tol, dtype=np.int64)  # (R, k): ray on plane
    R = len(pat.ray_owner)
    counts = (csr_matrix((np.ones(R, np.int64), (pat.ray_owner, np.arange(R))), shape=(P, R)) @ on).toarray()
    ci, h = np.nonzero(counts >= max(r - 1, 0))
    flipped = words[ci].copy()
    flipped[np.arange(len(ci)), h // 64] ^= np.left_shift(np.uint64(1), (63 - h % 64).astype(np.uint64))
    # exact lookup of the flipped sign vectors among the chambers': sort both together
    # (chambers first among equal rows); a query whose run starts with a chamber has found it
    allw = np.concatenate([words, flipped])
    tag = np.concatenate([np.zeros(P, np.int64), np.ones(len(ci), np.int64)])
    order = np.lexsort((tag,) + tuple(allw[:, w] for w in range(allw.shape[1] - 1, -1, -1)))
    sw = allw[order]
    start = np.ones(len(order), bool)
    start[1:] = np.any(sw[1:] != sw[:-1], axis=1)
    head = order[np.flatnonzero(start)[np.cumsum(start) - 1]]  # first row of each row's run
    q = order >= P
    j = np.full(len(ci), -1, np.int64)
    j[order[q] - P] = np.where(head[q] < P, head[q], -1)
    found = j >= 0
    E = np.stack([ci[found], j[found]], axis=1)
    return E[E[:, 0] < E[:, 1]]


def _words(B: np.ndarray) -> np.ndarray:
    """Rows of a boolean (m, k) matrix packed into (m, ⌈k/64⌉) uint64 words, bit h of a row at
    word h // 64, bit 63 − h % 64."""
    packed = np.packbits(B, axis=1)
    pad = (-packed.shape[1]) % 8
    return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(">u8").astype(np.uint64)


def spanning_forest(chambers: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Parent (position in ``chambers``, −1 for a root) of each chamber in a BFS forest of ``edges``.

    ``edges`` index patterns; only edges with both ends in ``chambers`` are used.
    """
    from scipy.sparse.csgraph import breadth_first_order

    C = len(chambers)
    pos = np.full(int(chambers.max()) + 1 if C else 0, -1, np.int64)
    pos[chambers] = np.arange(C)
    if edges.size:
        inside = edges.max(axis=1) < len(pos)
        e = edges[inside]
        e = pos[e]
        e = e[(e >= 0).all(axis=1)]
    else:
        e = np.zeros((0, 2), np.int64)
    ncomp, label = connected_components(csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(C, C)), directed=False)
    first = np.full(ncomp, -1, np.int64)
    first[label[::-1]] = np.arange(C)[::-1]
    # one BFS from a virtual node C joined to the first chamber of every component
    e = np.concatenate([e, np.stack([np.full(ncomp, C), first], axis=1)])
    graph = csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(C + 1, C + 1))
    order, pred = breadth_first_order(graph, C, directed=False, return_predecessors=True)
    parent = pred[:C].astype(np.int64)
    parent[parent == C] = -1
    return parent
