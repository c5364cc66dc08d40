"""A run's folder: atomic writes, checkpoints that resume bit-identically, progress.

Every file is written to a temporary name in the same folder and renamed into
place (``os.replace`` is atomic on POSIX), so an interrupted run never leaves a
half-written file. Checkpoints are ``.npz`` files of the flattened state and the
records so far; a resumed run continues from the last one with the same
segments, hence the same floating-point operations, as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from wgflow.errors import InputError

INTERRUPT_ENV = "WGFLOW_TEST_INTERRUPT_AFTER"  # tests: raise after this many checkpointed segments


class SimulatedInterrupt(RuntimeError):
    """Raised by tests (via ``WGFLOW_TEST_INTERRUPT_AFTER``) to kill a run mid-way."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    return obj


class RunDir:
    """The output folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- files
    def write_text(self, name: str, text: str) -> Path:
        atomic_write_bytes(self.path / name, text.encode())
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def save_npz(self, name: str, **arrays) -> Path:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(self.path / name, buf.getvalue())
        return self.path / name

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / name) as f:
            return {k: f[k] for k in f.files}

    def savefig(self, fig, stem: str) -> list[Path]:
        """PNG and PDF of a matplotlib figure, each written atomically."""
        out = []
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=130, bbox_inches="tight")
            atomic_write_bytes(self.path / f"{stem}.{ext}", buf.getvalue())
            out.append(self.path / f"{stem}.{ext}")
        return out

    # -- checkpoints
    def checkpoint_path(self, key: str) -> Path:
        return self.path / "checkpoints" / f"{key}.npz"

    def save_checkpoint(self, key: str, state: Any, records: dict[str, np.ndarray], step: int, fingerprint: str) -> None:
        leaves = jax.tree_util.tree_leaves(state)
        arrays = {f"state/{i}": np.asarray(x) for i, x in enumerate(leaves)}
        arrays.update({f"record/{k}": np.asarray(v) for k, v in records.items()})
        arrays["step"] = np.asarray(step)
        arrays["fingerprint"] = np.asarray(fingerprint)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path(key), buf.getvalue())

    def load_checkpoint(self, key: str, like_state: Any, fingerprint: str):
        """(state, records, step) from the checkpoint ``key``, or None if there is none."""
        path = self.checkpoint_path(key)
        if not path.exists():
            return None
        with np.load(path) as f:
            if str(f["fingerprint"]) != fingerprint:
                raise InputError(
                    "--resume",
                    f"the checkpoint in {path.parent} was made with a different config",
                    "resume with the same config and --set values, or run into a new --out folder",
                )
            treedef = jax.tree_util.tree_structure(like_state)
            leaves = [f[f"state/{i}"] for i in range(treedef.num_leaves)]
            records = {k[len("record/") :]: f[k] for k in f.files if k.startswith("record/")}
            step = int(f["step"])
        return jax.tree_util.tree_unflatten(treedef, leaves), records, step


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_segments(
    run_dir: RunDir,
    key: str,
    total_steps: int,
    segment: int,
    state: Any,
    advance: Callable[[Any, int, int], tuple[Any, dict[str, np.ndarray]]],
    *,
    resume: bool,
    fingerprint: str,
    concat_axis: dict[str, int] | None = None,
    on_segment: Callable[[int], None] | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Advance ``state`` from step 0 to ``total_steps`` in segments of ``segment`` steps.

    ``advance(state, k0, k1) -> (state, records)`` runs steps k0..k1; records of
    successive segments are concatenated (along ``concat_axis[name]``, default 0)
    and checkpointed with the state after each segment. With ``resume`` the run
    restarts from the last checkpoint.
    """
    concat_axis = concat_axis or {}
    records: dict[str, np.ndarray] = {}
    k = 0
    if resume:
        loaded = run_dir.load_checkpoint(key, state, fingerprint)
        if loaded is not None:
            state, records, k = loaded
    limit = os.environ.get(INTERRUPT_ENV)
    done_here = 0
    while k < total_steps:
        k1 = min(k + segment, total_steps)
        state, rec = advance(state, k, k1)
        for name, arr in rec.items():
            ax = concat_axis.get(name, 0)
            records[name] = arr if name not in records else np.concatenate([records[name], arr], axis=ax)
        k = k1
        run_dir.save_checkpoint(key, state, records, k, fingerprint)
        if on_segment is not None:
            on_segment(k)
        done_here += 1
        if limit is not None and done_here >= int(limit) and k < total_steps:
            raise SimulatedInterrupt(f"simulated interruption after {done_here} segment(s) at step {k}")
    return state, records


class Progress:
    """A progress bar with time left and the current objective on a terminal; silent otherwise."""

    def __init__(self, total: int, description: str, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total
        self._bar = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total, status="")
            self._bar.start()

    def update(self, completed: int, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, status=status)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
