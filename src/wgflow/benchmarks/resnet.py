"""Benchmark: one conditional-flow step of the deep mean-field ResNet against plain PyTorch autograd.

One *flow step* is what a training step of the ResNet costs: the forward pass through S
layers of M neurons on N inputs in R^d, the backward (adjoint) pass, and the update of every
neuron. wgflow computes it with ``wgflow.flows.conditional.resnet_step`` (explicit adjoint, one
compiled XLA program); the baseline is the same network written plainly in PyTorch
(``x = x + cos(x Wᵀ + b) U / (S M)`` per layer, ``loss.backward()``, in-place SGD with the
learning rate η·S·M that makes it the same flow step). float32, on the CPU, both frameworks
with their default thread pools (reported).

Each framework runs in its own long-lived subprocess (clean peak-memory numbers, no
thread-pool interference); after two warm-up steps the driver asks them in turn for
batches of timed steps, so that both see the same load on a shared machine. ``seconds``
is the minimum over the timed steps (the statistic least disturbed by other load); the
medians are reported too. Both workers build the same data and parameters from one numpy
seed and report the loss at the first step, so the row also checks they ran the same model.

PyTorch is optional: it is looked for in this interpreter, then in ``$WGFLOW_TORCH_PYTHON``,
then in the interpreter named by ``$WGFLOW_TORCH_PYTHON``; without it the baseline is reported as skipped.

Usage::

    wgflow bench --only resnet [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # the folder holding the wgflow package
CONFIGS = [
    {"N": 256, "d": 16, "S": 32, "M": 256},
    {"N": 1024, "d": 64, "S": 64, "M": 512},
]
ETA = 0.1


def _data(N: int, d: int, S: int, M: int):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, d)) / np.sqrt(d)
    Y = X + 0.1 * rng.normal(size=(N, d)) / np.sqrt(d)
    U = 0.1 * rng.normal(size=(S, M, d))
    W = rng.normal(size=(S, M, d))
    B = rng.uniform(0, np.pi, size=(S, M))
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (X, Y, U, W, B))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's at fork)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# --------------------------------------------------------------------------- workers (run in subprocesses)


def _jax_setup(cfg: dict):
    import jax
    import jax.numpy as jnp

    from wgflow.flows.conditional import resnet_step
    from wgflow.models import ResNetParams, make_resnet_objective

    X, Y, U, W, B = _data(**cfg)
    obj = make_resnet_objective(X, Y, "cos")
    assert obj.X.dtype == jnp.float32
    state = {"params": ResNetParams(jnp.asarray(U), jnp.asarray(W), jnp.asarray(B))}

    def step(o, q):
        new, loss, _ = resnet_step(o, q, ETA)
        return new, loss

    try:  # XLA's own account of the step's buffers (temporaries + outputs)
        mem = jax.jit(step).lower(obj, state["params"]).compile().memory_analysis()
        buffers_mb = (mem.temp_size_in_bytes + mem.output_size_in_bytes) / 2**20
    except Exception:  # best-effort  # noqa: BLE001
        buffers_mb = float("nan")
    jstep = jax.jit(step, donate_argnums=1)

    def run_step():
        state["params"], loss = jstep(obj, state["params"])
        jax.block_until_ready(state["params"])
        return loss

    return run_step, {"framework": f"jax {jax.__version__}", "threads": os.cpu_count(), "xla_buffers_mb": buffers_mb}


def _torch_setup(cfg: dict):
    import torch

    N, S, M = cfg["N"], cfg["S"], cfg["M"]
    X, Y, U, W, B = (torch.from_numpy(a) for a in _data(**cfg))
    U, W, B = (a.clone().requires_grad_(True) for a in (U, W, B))
    lr = ETA * S * M  # the flow step: velocity = S·M × the autograd gradient

    def run_step():
        x = X
        for k in range(S):
            x = x + torch.cos(x @ W[k].T + B[k]) @ U[k] / (S * M)
        loss = 0.5 * ((x - Y) ** 2).sum() / N
        loss.backward()
        with torch.no_grad():
            for p in (U, W, B):
                p.sub_(lr * p.grad)
                p.grad = None
        return loss.detach()

    return run_step, {"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads()}


def _worker(which: str, cfg: dict) -> None:
    """Set up, warm up (2 steps), then serve ``run K`` (time K steps) / ``stats`` / ``quit`` on stdin."""
    run_step, info = (_jax_setup if which == "jax" else _torch_setup)(cfg)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    loss0 = float(run_step())
    info.update(first_call_seconds=time.perf_counter() - t0, loss0=loss0)
    run_step()
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            times = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                run_step()
                times.append(time.perf_counter() - t)
            print(json.dumps({"times": times}), flush=True)
        elif cmd[0] == "stats":
            print(json.dumps({"peak_rss_mb": _peak_mb(), "step_rss_mb": _peak_mb() - rss0}), flush=True)


# --------------------------------------------------------------------------- driver


def _torch_python() -> str | None:
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    for cand in (os.environ.get("WGFLOW_TORCH_PYTHON"),):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import torch"], capture_output=True, check=False).returncode == 0
            if ok:
                return cand
    return None


class _Worker:
    def __init__(self, python: str, which: str, cfg: dict):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        env.pop("JAX_ENABLE_X64", None)
        cmd = [python, str(Path(__file__).resolve()), "--worker", which, "--config", json.dumps(cfg)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def _bench_config(cfg: dict, rounds: int, per_round: int, torch_py: str | None) -> dict:
    ours = _Worker(sys.executable, "jax", cfg)
    base, skipped = None, "skipped: torch is not installed (pip install 'wgflow[bench]' installs the benchmark baselines)"
    if torch_py:
        try:
            base = _Worker(torch_py, "torch", cfg)
        except RuntimeError as exc:
            skipped = f"skipped: the torch worker failed ({exc})"
    t_ours, t_base = [], []
    try:
        for _ in range(rounds):  # alternate batches, so that both frameworks see the same machine load
            t_ours += ours.ask(f"run {per_round}")["times"]
            time.sleep(0.3)
            if base is not None:
                t_base += base.ask(f"run {per_round}")["times"]
                time.sleep(0.3)
        m_ours = ours.ask("stats")
        m_base = base.ask("stats") if base is not None else {}
    finally:
        ours.close()
        if base is not None:
            base.close()
    ok = base is not None
    import statistics

    return {
        "seconds": min(t_ours),
        "seconds_median": statistics.median(t_ours),
        "baseline": "pytorch autograd" if ok else skipped,
        "baseline_seconds": min(t_base) if ok else None,
        "baseline_seconds_median": statistics.median(t_base) if ok else None,
        "ratio": min(t_base) / min(t_ours) if ok else None,  # > 1: wgflow is faster
        "ratio_median": statistics.median(t_base) / statistics.median(t_ours) if ok else None,
        "peak_rss_mb": m_ours["peak_rss_mb"],
        "step_rss_mb": m_ours["step_rss_mb"],
        "xla_buffers_mb": ours.info["xla_buffers_mb"],
        "baseline_peak_rss_mb": m_base.get("peak_rss_mb"),
        "baseline_step_rss_mb": m_base.get("step_rss_mb"),
        "loss_rel_diff": abs(ours.info["loss0"] - base.info["loss0"]) / abs(base.info["loss0"]) if ok else None,
        "first_call_seconds": ours.info["first_call_seconds"],
        "framework": ours.info["framework"],
        "baseline_framework": base.info["framework"] if ok else None,
        "threads": ours.info["threads"],
        "baseline_threads": base.info["threads"] if ok else None,
    }


def run(quick: bool = False) -> list[dict]:
    """One row per configuration: wgflow's flow step against PyTorch autograd (see the module docstring)."""
    configs = CONFIGS[:1] if quick else CONFIGS
    rounds, per_round = (3, 2) if quick else (5, 3)
    torch_py = _torch_python()
    rows = []
    for cfg in configs:
        name = "resnet_flow_step_N{N}_d{d}_S{S}_M{M}".format(**cfg)
        res = _bench_config(cfg, rounds, per_round, torch_py)
        rows.append(
            dict(
                name=name,
                **cfg,
                dtype="float32",
                reps=rounds * per_round,
                target="ratio ≥ 1 (at least as fast as PyTorch)",
                **res,
                machine=platform.processor() or platform.machine(),
                load_average=os.getloadavg()[0],
            )
        )
    return rows


def _print(rows: list[dict]) -> None:
    print(f"{'name':42s} {'wgflow s':>9s} {'torch s':>9s} {'ratio':>6s} {'wgflow MB':>10s} {'torch MB':>9s}")
    for r in rows:
        b = "skipped" if r["baseline_seconds"] is None else f"{r['baseline_seconds']:.4f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        bm = "-" if r["baseline_step_rss_mb"] is None else f"{r['baseline_step_rss_mb']:.0f}"
        print(f"{r['name']:42s} {r['seconds']:9.4f} {b:>9s} {ratio:>6s} {r['step_rss_mb']:10.0f} {bm:>9s}")
    print("seconds: min over reps of one flow step; ratio = torch / wgflow (> 1: wgflow faster); MB: peak RSS growth during the steps")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small configuration only, 3 timed steps")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE")
    ap.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, json.loads(args.config))
        return
    rows = run(quick=args.quick)
    _print(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
