"""Many neurons: the chunked step against the unchunked one, and a million neurons in bounded memory.

- ``chunked_vs_unchunked``: one explicit step at (n, m, d) = (4096, 10⁵, 20), float32, with
  automatic chunks against ``Chunking("none")`` (which stores n × m matrices), in the same run;
  per-FLOP speed ratio (target ≥ 0.7) and each one's compiled temporary memory.
- ``million_neurons``: one step at (4096, 10⁶, 20) in a fresh process; its peak resident
  memory (target ≤ 4 GiB) and speed as a fraction of this machine's matmul rate.
"""

from __future__ import annotations

import textwrap

import numpy as np

from wgflow.benchmarks.common import best_time, matmul_gflops, row, run_fresh


def _step(n, m, d, chunking):
    import jax
    import jax.numpy as jnp

    from wgflow import make_objective
    from wgflow.flows.particle import explicit_step
    from wgflow.measure import Measure

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    obj = make_objective(X, y, "lifted", lam=1e-3, reduction="mean", chunking=chunking)
    pos = jnp.asarray(rng.standard_normal((m, d + 1)).astype(np.float32))
    mu = Measure(pos, jnp.full((m,), 1.0 / m, jnp.float32))
    step = jax.jit(lambda o, mu: explicit_step(o, mu, jnp.float32(0.1))[0])
    mem = step.lower(obj, mu).compile().memory_analysis()
    return (lambda: jax.block_until_ready(step(obj, mu))), getattr(mem, "temp_size_in_bytes", None)


MILLION = textwrap.dedent(
    """
    import json
    from wgflow.benchmarks.scale import _step
    from wgflow.benchmarks.common import best_time, peak_rss_bytes
    fn, temp = _step({n}, {m}, {d}, None)
    t = best_time(fn, 1, min_seconds=0.0)
    print(json.dumps({{"seconds": t, "peak_rss_bytes": peak_rss_bytes(), "temp_bytes": temp}}))
    """
)


def run(quick: bool = False) -> list[dict]:
    from wgflow.chunking import Chunking

    peak = matmul_gflops(1024 if quick else 2048)
    n, d = (1024, 20) if quick else (4096, 20)
    m = 20_000 if quick else 100_000
    flops = 4 * n * m * (d + 1)
    fn_c, temp_c = _step(n, m, d, None)
    fn_u, temp_u = _step(n, m, d, Chunking("none"))
    t_c, t_u = best_time(fn_c, 2), best_time(fn_u, 2)
    rows = [
        row(
            f"chunked vs unchunked step n={n} m={m} d={d}",
            t_c,
            t_u,
            n=n,
            m=m,
            d=d,
            fraction_of_peak=flops / t_c / 1e9 / peak,
            baseline_fraction_of_peak=flops / t_u / 1e9 / peak,
            temp_bytes=temp_c,
            baseline_temp_bytes=temp_u,
            target="ratio ≥ 0.7 (per-FLOP speed of the unchunked step)",
        )
    ]
    M = 100_000 if quick else 1_000_000
    try:
        res = run_fresh(MILLION.format(n=n, m=M, d=d))
    except RuntimeError as exc:
        rows.append(row(f"one step, {M} neurons n={n} d={d}", float("nan"), None, error=str(exc)))
    else:
        rows.append(
            row(
                f"one step, {M} neurons n={n} d={d}",
                res["seconds"],
                None,
                n=n,
                m=M,
                d=d,
                fraction_of_peak=4 * n * M * (d + 1) / res["seconds"] / 1e9 / peak,
                peak_rss_gib=res["peak_rss_bytes"] / 2**30,
                temp_bytes=res["temp_bytes"],
                target="peak memory ≤ 4 GiB",
            )
        )
    return rows
