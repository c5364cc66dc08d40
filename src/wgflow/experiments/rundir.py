"""A run's folder: owned through a manifest, locked while running, written atomically, resumable.

**Ownership.** A folder is a wgflow run when it holds a manifest, ``wgflow-run.json``, written
before anything else: the wgflow version, the config's hash, the state (``running``,
``finished``, ``failed``, ``interrupted``), the PID and host while running, and the list of
files wgflow wrote there. wgflow deletes or overwrites only the files its manifest lists; it
writes into a non-empty folder without a manifest only with ``force``, never over a file of
the same name.

**Lock.** The manifest's PID is the folder's lock: a second run into the folder is refused
while that process lives; the lock of a process that is gone (on this host) is taken over.

**Atomic files.** Every file is written to a temporary name in the same folder and renamed
into place (``os.replace`` is atomic on POSIX), so an interrupted run never leaves a
half-written file. Checkpoints are ``.npz`` files of the flattened state and the records so
far; a resumed run continues from the last one with the same floating-point operations as an
uninterrupted run (the solve loop's state continues bit-identically from any step).

**Signals.** Under :func:`stop_on_signals`, SIGINT or SIGTERM stops a run at the next
checkpoint it can take: the block of steps in progress (:func:`interrupt_requested` as the solve
loop's pause hook), or the part in progress (:func:`run_part`); at once outside them, or on a
second signal, with :class:`RunInterrupted`. Segments that run at once in threads
(:func:`run_concurrently`) each stop at their own block and checkpoint there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import io
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from wgflow.errors import InputError
from wgflow.runtime import release_compiled_programs

INTERRUPT_ENV = "WGFLOW_TEST_INTERRUPT_AFTER"  # tests: raise after this many checkpointed segments
MANIFEST = "wgflow-run.json"
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
#: names wgflow writes in every run folder: never written beside a foreign file of the same name
RESERVED = ("config.toml", "summary.json", "metrics.csv", "results.npz", "checkpoints", MANIFEST)


#: the formats :meth:`RunDir.savefig` writes
FIGURE_FORMATS = ("png", "pdf")


def figure_files(*stems: str) -> list[str]:
    """The files :meth:`RunDir.savefig` writes for these figures."""
    return [f"{stem}.{ext}" for stem in stems for ext in FIGURE_FORMATS]


class SimulatedInterrupt(RuntimeError):
    """Raised by tests (via ``WGFLOW_TEST_INTERRUPT_AFTER``) to kill a run mid-way."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; its checkpoints are kept. ``exit_code``: 128 + the signal."""

    def __init__(self, signum: int, detail: str):
        self.signum = signum
        self.exit_code = 128 + signum
        self.detail = detail
        super().__init__(f"{signal.Signals(signum).name}: {detail}")


# --------------------------------------------------------------------------- files


def writes_files() -> bool:
    """Whether this process writes run folders: process 0 of a ``jax.distributed`` job (the
    others compute the same results and write nothing); always, in a single process."""
    return jax.process_index() == 0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    if not writes_files():
        return
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


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _corrupt(path: Path, exc: BaseException, fix: str) -> InputError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return InputError(str(path), f"cannot be read ({reason})", fix)


def file_kind(path: Path) -> str | None:
    """``"npz"`` (a zip archive), ``"npy"`` (one NumPy array) or None, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return "npz" if head.startswith(b"PK") else ("npy" if head == b"\x93NUMPY" else None)


def _read_npz(path: Path, fix: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, or an :class:`InputError` naming the file (missing, corrupt, pickled)."""
    try:
        kind = file_kind(path)
        if kind == "npy":
            raise InputError(str(path), "is a single array (.npy), not an .npz archive", fix)
        if kind is None:
            raise InputError(str(path), "is not an .npz file (not a zip archive)", fix)
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InputError):
            raise
        raise _corrupt(path, exc, fix) from None
    try:
        with loaded as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _corrupt(path, exc, fix) from None


# --------------------------------------------------------------------------- the manifest and its lock


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _host() -> str:
    return socket.gethostname()


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), to tell a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _process_start(pid)
    return started is None or now is None or now == started


def read_manifest(path: Path) -> dict | None:
    """The manifest of the folder ``path`` (None when there is none)."""
    file = Path(path) / MANIFEST
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text())
        if not (isinstance(data, dict) and isinstance(data.get("files"), list) and isinstance(data.get("state"), str)):
            raise ValueError("not a wgflow manifest")
        for f in data["files"]:  # names inside the folder only: wgflow deletes what it lists
            parts = Path(f).parts if isinstance(f, str) else ()
            if not parts or Path(f).is_absolute() or any(q in ("..", ".") for q in parts) or f != Path(f).as_posix():
                raise ValueError(f"its file list holds {f!r}, not a file inside the folder")
        digests = data.get("digests", {})
        if not (isinstance(digests, dict) and all(isinstance(v, list) and all(isinstance(d, str) for d in v) for v in digests.values())):
            raise ValueError("its digests are not lists of SHA-256 texts")
        if "pid" in data and data["pid"] is not None and (isinstance(data["pid"], bool) or not isinstance(data["pid"], int)):
            raise ValueError(f"its pid {data['pid']!r} is not a process number")
        return data
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(file, exc, f"move {file} away if this folder is not a wgflow run, or run into another --out folder") from None


def lock_holder(manifest: dict) -> tuple[str, str] | None:
    """Who holds the folder's lock: (``"live"``, ``"stale"`` or ``"elsewhere"``, a description), or None."""
    pid = manifest.get("pid")
    if manifest.get("state") != RUNNING or not isinstance(pid, int):
        return None
    host = manifest.get("host")
    who = f"PID {pid} on {host}, started {manifest.get('started', '?')}"
    if host != _host():
        return "elsewhere", who
    return ("live" if _alive(pid, manifest.get("pid_started")) else "stale"), who


def _config_diff(old_text: str, new_text: str) -> list[str]:
    """``key: old → new`` for every field that differs between two config TOMLs."""

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    try:
        a, b = flat(tomllib.loads(old_text)), flat(tomllib.loads(new_text))
    except (tomllib.TOMLDecodeError, ValueError):
        return []
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def resume_command(path: Path) -> str:
    """The command that continues the run in ``path`` (its own resolved config, so no --set is needed)."""
    return f"wgflow run {shlex.quote(str(path / 'config.toml'))} --resume --out {shlex.quote(str(path))}"


def _visible_entries(path: Path) -> list[str]:
    """The folder's entries, but for the temporary of a manifest being written (another run starting)."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not (p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp")))


def _check_writable_folder(path: Path) -> None:
    """``--out`` is a folder (or can be made one) that this process may write in."""
    if path.exists() and not path.is_dir():
        raise InputError("--out", f"{path} is a file, not a folder", "give the path of a folder (it is created if missing)")
    anc = path
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise InputError("--out", f"{anc} is a file, so {path} cannot be a folder", "give a folder path that does not pass through a file")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError("--out", f"cannot write in {anc} (permission denied)", "give a folder you can write in")


def checkpoint_header(path: Path) -> tuple[str, int]:
    """(config fingerprint, step) of a checkpoint file, or an :class:`InputError` naming it."""
    fix = f"delete {path} (that part of the run then starts again from step 0), or start over with --overwrite"
    f = _read_npz(path, fix)
    try:
        return str(f["fingerprint"]), int(f["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, exc, fix) from None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What opening a run folder will do (decided without writing anything)."""

    path: Path
    previous: dict | None  # the manifest found there
    replace: bool  # the previous run's files are deleted first (--overwrite)
    notices: tuple[str, ...]
    checkpoints: tuple[tuple[str, int], ...] = ()  # (file, step) to resume from


def plan_run(
    path: str | Path,
    config_hash: str,
    config_text: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force: bool = False,
    outputs: Sequence[str] = (),
    checkpoint_hash: str | None = None,
) -> Plan:
    """Check that a run may write into ``path``; raise :class:`InputError` (changing nothing) if not.

    ``checkpoint_hash``: what the checkpoints must carry (the kind's ``checkpoint_fingerprint``:
    the config and, for a user's data file, its bytes); default ``config_hash``.
    A missing or empty folder is fine. A folder without a manifest is refused unless ``force``
    (and then still if it holds a file of a name wgflow writes: the run folder's own files, or
    one of ``outputs``, the figures and other files this run will write). A folder with a manifest is
    refused while its lock is live; without ``resume`` it is replaced only with ``overwrite``;
    with ``resume`` its config must be this one and its checkpoints must be readable.
    """
    from wgflow import __version__

    path = Path(path)
    _check_writable_folder(path)
    resume_cmd = resume_command(path)
    manifest = read_manifest(path) if path.is_dir() else None
    notices: list[str] = []
    if manifest is None:
        entries = _visible_entries(path) if path.is_dir() else []
        if resume:
            what = "does not exist" if not path.exists() else ("is empty" if not entries else f"holds no {MANIFEST}")
            raise InputError(
                "--resume",
                f"{path} {what}: there is no wgflow run there to resume (it never ran)",
                "run it without --resume, or give the --out folder of an interrupted run",
            )
        if entries and not force:
            shown = ", ".join(entries[:8]) + (f", … ({len(entries)} entries)" if len(entries) > 8 else "")
            raise InputError(
                "--out",
                f"{path} is not empty and is not a wgflow run folder (no {MANIFEST}); it holds {shown}",
                "give a new or empty --out folder, or pass --force to write beside these files (wgflow never deletes or overwrites them)",
            )
        # a foreign checkpoints/ folder may stay: each file wgflow writes in it is checked by name
        names = {e.rstrip("/") for e in entries}
        clash = sorted(names & (set(RESERVED) - {"checkpoints"} | set(outputs)))
        own = path / "checkpoints"
        # a foreign checkpoints/ may stay beside the run unless it could hold a name wgflow writes there
        if own.is_symlink() or (own.exists() and (not own.is_dir() or any(own.glob("*.npz")))):
            clash.append("checkpoints/*.npz" if own.is_dir() and not own.is_symlink() else "checkpoints")
        if clash:
            raise InputError(
                "--out",
                f"{path} holds {', '.join(clash)}, not written by wgflow (no {MANIFEST}); a run would overwrite them",
                "move them away, or give another --out folder (an older wgflow's run folder cannot be reused: start a new one)",
            )
        return Plan(path, None, False, tuple(notices))

    holder = lock_holder(manifest)
    if holder is not None:
        kind, who = holder
        if kind == "live":
            raise InputError("--out", f"{path} is in use by a wgflow run in progress ({who})", "wait for it to finish, or give another --out folder")
        if kind == "elsewhere" and not force:
            raise InputError(
                "--out",
                f"{path} is locked by a wgflow run on another host ({who}); this host cannot tell whether it still runs",
                "if it no longer runs, pass --force to take the folder over; else give another --out folder",
            )
        notices.append(f"taking over the lock of {who}: that run is no longer running")
    listed = [f for f in manifest["files"] if (path / f).exists() or (path / f).is_symlink()]
    # a resume reads its checkpoints and names a damaged one; a replaced one is never deleted
    changed = changed_files(path, manifest, [f for f in listed if not (resume and f.startswith("checkpoints/") and (path / f).is_file())])
    if (path / "checkpoints").is_symlink():
        changed = ["checkpoints (a symbolic link)", *changed]
    if changed:
        shown = ", ".join(changed[:6]) + (f", … ({len(changed)} files)" if len(changed) > 6 else "")
        raise InputError(
            "--out",
            f"{path} holds {shown}, changed since wgflow wrote them: a run there would delete or overwrite them",
            "move them away (or copy them elsewhere), or give another --out folder",
        )
    foreign = sorted(set(outputs) & {e.rstrip("/") for e in _visible_entries(path)} - set(manifest["files"]))
    if foreign:  # files put beside a run made with --force: a run writes none of them
        raise InputError(
            "--out",
            f"{path} holds {', '.join(foreign)}, not written by wgflow; this run would write files of these names",
            "move them away, or give another --out folder",
        )
    if not resume:
        if listed and not overwrite:
            state = manifest["state"] if holder is None else INTERRUPTED
            what = "a finished run" if state == FINISHED else f"an unfinished run (state: {state})"
            how = "" if state == FINISHED else f"continue it with `{resume_cmd}`, or "
            raise InputError(
                "--out",
                f"{path} holds {what} of {manifest.get('experiment', '?')} ({len(listed)} file(s) written by wgflow)",
                f"{how}pass --overwrite to replace it, or give another --out folder",
            )
        if listed:
            notices.append(f"replacing the previous run in {path} (--overwrite): deleting the {len(listed)} file(s) its manifest lists")
        return Plan(path, manifest, bool(listed), tuple(notices))

    if manifest.get("config_hash") != config_hash:
        old = path / "config.toml"
        diff = _config_diff(old.read_text(), config_text) if "config.toml" in listed else []
        shown = "; ".join(diff[:6]) + (f"; … ({len(diff)} fields)" if len(diff) > 6 else "")
        raise InputError(
            "--resume",
            f"the run in {path} was made with a different config" + (f" ({shown})" if shown else ""),
            f"resume with the same config and --set values (`{resume_cmd}`), or run into a new --out folder",
        )
    if manifest.get("wgflow") != __version__:
        raise InputError(
            "--resume",
            f"the run in {path} was made by wgflow {manifest.get('wgflow')}, this is {__version__}: its checkpoints may not continue bit-identically",
            f"resume it with wgflow {manifest.get('wgflow')}, or start over with --overwrite",
        )
    checkpoints = []
    for f in listed:
        if f.startswith("checkpoints/") and f.endswith(".npz"):
            fp, step = checkpoint_header(path / f)
            if fp != (checkpoint_hash or config_hash):
                raise InputError(
                    "--resume",
                    f"the checkpoint {path / f} was made with a different config" + (" or data file" if checkpoint_hash else ""),
                    "delete it (that part restarts from step 0), or start over with --overwrite",
                )
            checkpoints.append((f, step))
    if checkpoints:
        notices.append(f"resuming {path}: " + ", ".join(f"{Path(f).stem} " + ("done" if s == PART_DONE else f"from step {s}") for f, s in checkpoints))
    else:
        notices.append(f"resuming {path}: no checkpoint was written yet, so the run starts from step 0")
    return Plan(path, manifest, False, tuple(notices), tuple(checkpoints))


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself while its manifest is read and written."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class RunDir:
    """The folder of one run. ``RunDir(path)`` reads; a RunDir from :func:`open_run` or
    :func:`open_finished` also writes, and lists every file it writes in the manifest first."""

    def __init__(self, path: str | Path, manifest: dict | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self._lock = threading.RLock()  # the manifest is shared by the threads of run_concurrently

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- the manifest
    def _save_manifest(self) -> None:
        assert self.manifest is not None
        self.manifest["updated"] = _now()
        atomic_write_bytes(self.path / MANIFEST, (json.dumps(self.manifest, indent=2) + "\n").encode())

    def _claim(self, rel: str, digest: str | None = None) -> Path:
        """List ``rel`` in the manifest (with the digest of what is about to be written) before it
        is written. A foreign file of that name is refused, as is a listed file that changed
        since wgflow wrote it (someone put their own file there)."""
        if self.manifest is not None and not writes_files():  # process 0 of the job claims and writes
            return self.path / rel
        if self.manifest is None:
            raise RuntimeError(f"{self.path} was opened read-only (RunDir(path)); open it with open_run or open_finished to write")
        target = self.path / rel
        fix = f"move it away; the results are in {self.path}/results.npz and `wgflow report {self.path}` writes the figures again"
        if target.parent != self.path and target.parent.is_symlink():
            raise InputError(
                str(target.parent), "is a symbolic link: wgflow writes only inside its run folder", "replace it by a plain folder, or give another --out folder"
            )
        if rel not in self.manifest["files"]:
            if target.exists() or target.is_symlink():
                raise InputError(str(target), "exists and was not written by wgflow, so it is left as it is", fix)
            self.manifest["files"].append(rel)
        elif rel in changed_files(self.path, self.manifest, [rel]):
            raise InputError(str(target), "changed since wgflow wrote it, so it is left as it is", fix)
        if digest is not None:
            # write-ahead: the new digest beside the last one, so that a kill between the manifest
            # and the file leaves a file the manifest still recognises
            digests = self.manifest.setdefault("digests", {})
            digests[rel] = [digest] + [d for d in digests.get(rel, [])[:1] if d != digest]
        self._save_manifest()
        return target

    def set_state(self, state: str, message: str | None = None) -> None:
        """Record the run's state; any state but ``running`` releases the lock."""
        assert self.manifest is not None
        with self._lock:
            self.manifest["state"] = state
            self.manifest["message"] = message
            if state != RUNNING:
                self.manifest.update(pid=None, pid_started=None)
            self._save_manifest()

    # -- files
    def write_bytes(self, name: str, data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            target = self._claim(name, digest)
            atomic_write_bytes(target, data)
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode())

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise _corrupt(path, exc, "run the experiment again into this folder with --overwrite (or into a new --out folder)") from None

    def save_npz(self, name: str, **arrays) -> Path:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.write_bytes(name, buf.getvalue())

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        return _read_npz(self.path / name, "run the experiment again into this folder with --overwrite (or into a new --out folder)")

    def savefig(self, fig, stem: str) -> list[Path]:
        """PNG and PDF of a matplotlib figure, each written atomically."""
        out = []
        for ext in FIGURE_FORMATS:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=130, bbox_inches="tight")
            out.append(self.write_bytes(f"{stem}.{ext}", buf.getvalue()))
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
        self.write_bytes(f"checkpoints/{key}.npz", buf.getvalue())

    def load_checkpoint(self, key: str, like_state: Any, fingerprint: str):
        """(state, records, step) from the checkpoint ``key``, or None if there is none."""
        path = self.checkpoint_path(key)
        if not path.exists():
            return None
        fix = f"delete {path} (that part of the run then starts again from step 0), or start over with --overwrite"
        f = _read_npz(path, fix)
        if str(f.get("fingerprint")) != fingerprint:
            raise InputError(
                "--resume",
                f"the checkpoint in {path.parent} was made with a different config",
                "resume with the same config and --set values, or run into a new --out folder",
            )
        treedef = jax.tree_util.tree_structure(like_state)
        try:
            leaves = [f[f"state/{i}"] for i in range(treedef.num_leaves)]
            step = int(f["step"])
        except KeyError as exc:
            raise _corrupt(path, exc, fix) from None
        like = jax.tree_util.tree_leaves(like_state)
        if any(np.shape(a) != np.shape(b) for a, b in zip(leaves, like)):
            raise InputError(str(path), "holds a state of other shapes than this run's", fix)
        records = {k[len("record/") :]: v for k, v in f.items() if k.startswith("record/")}
        return jax.tree_util.tree_unflatten(treedef, leaves), records, step


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes (None if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def changed_files(path: Path, manifest: dict, files: Sequence[str] | None = None) -> list[str]:
    """The files of ``manifest`` (or of ``files``) present in ``path`` whose bytes are none that
    wgflow wrote there: replaced by someone since, or a symbolic link, a folder, or behind a
    linked folder where wgflow wrote a plain file. A file without a digest (an older wgflow's
    manifest) is judged by its kind alone."""
    digests = manifest.get("digests") or {}
    names = manifest["files"] if files is None else files
    out = []
    for f in names:
        target = path / f
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_symlink() or not target.is_file() or target.parent.is_symlink():
            out.append(f)  # a link or a folder where wgflow wrote a file: never wgflow's
        elif f in digests and file_digest(target) not in digests[f]:
            out.append(f)
    return out


def _remove_listed(path: Path, files: list[str]) -> None:
    """Delete the files a manifest lists (and the folders wgflow made, once empty)."""
    for rel in files:
        with contextlib.suppress(FileNotFoundError):
            (path / rel).unlink()
    with contextlib.suppress(OSError):
        (path / "checkpoints").rmdir()  # only if empty: a foreign file in it stays


def _remove_temporaries(path: Path, files: list[str]) -> None:
    """Temporaries of wgflow's own files left by a killed process (``.NAME.*.tmp``)."""
    for rel in [*files, MANIFEST]:
        target = path / rel
        for tmp in target.parent.glob(f".{target.name}.{'?' * 8}.tmp"):  # mkstemp's 8 random characters
            with contextlib.suppress(OSError):
                tmp.unlink()


def open_run(
    plan: Plan,
    config_hash: str,
    config_text: str,
    *,
    experiment: str,
    kind: str,
    resume: bool,
    overwrite: bool,
    force: bool,
    outputs: Sequence[str] = (),
    checkpoint_hash: str | None = None,
) -> RunDir:
    """Take the folder of ``plan``: the manifest first (state running, this PID as the lock), then,
    for ``--overwrite``, the previous run's files are deleted. Checked again under a folder lock,
    so that of two runs started at once one is refused."""
    from wgflow import __version__

    path = plan.path
    if not writes_files():  # another process of a jax.distributed job writes the folder
        return RunDir(path, {"files": [], "state": RUNNING, "resume_command": resume_command(path)})
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError("--out", f"cannot create the folder {path} ({exc.strerror or exc})", "give a folder you can write in") from None
    with _folder_lock(path):
        plan = plan_run(path, config_hash, config_text, resume=resume, overwrite=overwrite, force=force, outputs=outputs, checkpoint_hash=checkpoint_hash)
        previous = plan.previous
        kept = [] if (previous is None or plan.replace) else [f for f in previous["files"] if (path / f).exists()]
        manifest = {
            "wgflow": __version__,
            "experiment": experiment,
            "kind": kind,
            "config_hash": config_hash,
            "state": RUNNING,
            "pid": os.getpid(),
            "pid_started": _process_start(os.getpid()),
            "host": _host(),
            "started": _now(),
            "updated": _now(),
            "resume_command": resume_command(path),
            "message": None,
            "files": kept,
        }
        rd = RunDir(path, manifest)
        rd._save_manifest()
    if previous is not None:
        _remove_temporaries(path, previous["files"])
        if plan.replace:
            _remove_listed(path, previous["files"])
    return rd


def open_finished(path: str | Path) -> RunDir:
    """A finished run's folder, to read its results and write its figures again (``wgflow report``)."""
    path = Path(path)
    if not path.exists():
        raise InputError("DIR", f"{path} does not exist", "give the --out folder of a finished run")
    if not path.is_dir():
        raise InputError("DIR", f"{path} is a file, not a run folder", "give the --out folder of a finished run")
    manifest = read_manifest(path)
    if manifest is None:
        raise InputError("DIR", f"{path} is not a wgflow run folder (no {MANIFEST})", "give the --out folder of a run that completed")
    holder = lock_holder(manifest)
    if holder is not None and holder[0] == "live":
        raise InputError("DIR", f"{path} holds a run in progress ({holder[1]})", "wait for it to finish")
    if manifest["state"] != FINISHED or holder is not None:
        state = INTERRUPTED if holder is not None else manifest["state"]
        raise InputError("DIR", f"{path} holds a run that did not finish (state: {state})", f"finish it first: `{resume_command(path)}`")
    for name in ("config.toml", "summary.json", "results.npz"):
        if not (path / name).is_file():
            raise InputError(str(path / name), "is missing from this finished run", f"run the experiment again into {path} with --overwrite")
    # what report writes (the figures); a damaged results file is named by the read that fails
    changed = changed_files(path, manifest, [f for f in manifest["files"] if f not in RESERVED])
    if changed:
        raise InputError("DIR", f"{path} holds {', '.join(changed[:6])}, changed since wgflow wrote them", "move them away (report writes the figures again)")
    return RunDir(path, manifest)


@contextlib.contextmanager
def running(rd: RunDir) -> Iterator[RunDir]:
    """Mark ``rd``'s run ``finished`` on success, ``interrupted`` on an interruption, ``failed``
    (with the error) otherwise; every outcome releases the lock."""
    try:
        yield rd
    except (KeyboardInterrupt, SimulatedInterrupt) as exc:
        rd.set_state(INTERRUPTED, str(exc) or type(exc).__name__)
        exc.resume_command = rd.manifest["resume_command"]  # type: ignore[attr-defined,index]  # for the CLI's hint
        exc.checkpoints = sum(f.startswith("checkpoints/") for f in rd.manifest["files"])  # type: ignore[attr-defined,index]
        raise
    except BaseException as exc:
        rd.set_state(FAILED, f"{type(exc).__name__}: {exc}")
        raise
    rd.set_state(FINISHED)


# --------------------------------------------------------------------------- signals

#: ``pending``: the signal that asked the run to stop; ``segments``: what runs now, ``{key: (k0, k1)}``
#: (k1 None for a part)
_signals: dict[str, Any] = {"installed": False, "pending": None, "segments": {}}


def _where(key: str, k0: int, k1: int | None) -> str:
    return f"{key} (it {'runs again' if k1 is None else f'resumes from step {k0}'})"


@contextlib.contextmanager
def stop_on_signals(echo: Callable[[str], None]) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run with :class:`RunInterrupted`: after the next checkpoint (of
    the block of steps in progress in :func:`run_segments`, of the part in :func:`run_part`), at
    once outside them or on a second signal.
    A no-op outside the main thread (signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        segments = dict(_signals["segments"])
        if _signals["pending"] is not None or not segments:
            if not segments:
                raise RunInterrupted(signum, "stopped at once")
            raise RunInterrupted(signum, "stopped at once during " + ", ".join(_where(k, *ks) for k, ks in segments.items()))
        _signals["pending"] = signum
        name = signal.Signals(signum).name
        for key, (k0, k1) in segments.items():
            if k1 is None:  # a part (run_part): it checkpoints when done
                echo(f"{name}: stopping once {key} is done and checkpointed (signal again to stop at once: {key} then runs again)")
            else:
                echo(
                    f"{name}: stopping {key} at the end of the block of steps in progress and checkpointing there (signal again to stop at once: it then resumes from step {k0})"
                )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _signals.update(installed=True, pending=None, segments={})
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _signals.update(installed=False, pending=None, segments={})


#: the stop event of the :func:`run_concurrently` call a worker thread belongs to
_worker = threading.local()


def _stop_event() -> threading.Event | None:
    return getattr(_worker, "stop", None)


def interrupt_requested() -> bool:
    """Whether the run must stop: a signal asked it to (under :func:`stop_on_signals`), or
    another task of the same :func:`run_concurrently` call failed. A segment's ``advance``
    passes this as the solve loop's ``pause`` hook, so that the run checkpoints at the block
    it reached instead of at the end of the segment."""
    stop = _stop_event()
    return _signals["pending"] is not None or (stop is not None and stop.is_set())


class _Aborted(Exception):
    """A task of :func:`run_concurrently` stopped (after its checkpoint) because another failed."""


def _stop_if_asked(detail: str) -> None:
    pending = _signals["pending"]
    if pending is not None:
        raise RunInterrupted(pending, detail)
    stop = _stop_event()
    if stop is not None and stop.is_set():
        raise _Aborted(detail)


def run_concurrently(tasks: Sequence[Callable[[], Any]], workers: int, costs: Sequence[float] | None = None) -> list[Any]:
    """``[task() for task in tasks]``, ``workers`` at a time, each in a thread of its own.

    JAX runs compiled programs without the GIL, so independent sweeps of small programs (the
    groups of runs of a teacher–student sweep: a few hundred µs a step, one core each) run side
    by side on the cores. The results are those of the sequential loop, in order, bit for bit.
    ``costs`` (one per task, any unit): the costliest tasks start first, so that the cheap ones
    fill in beside them (longest processing time first).

    If a task fails, the others stop at their next checkpoint (:func:`interrupt_requested`),
    no further task starts, and the first failure is raised. A signal stops every task at its
    block, as for one; a second signal (raised here, in the main thread) returns at once, and
    the tasks still running stop at their next block on their own (daemon threads: they never
    keep the process alive)."""
    if workers <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    todo = sorted(range(len(tasks)), key=lambda i: -costs[i]) if costs is not None else list(range(len(tasks)))
    todo.reverse()  # popped from the end
    results: list[Any] = [None] * len(tasks)
    finished = [False] * len(tasks)
    failures: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        _worker.stop = stop
        while True:
            with lock:
                if not todo or stop.is_set() or _signals["pending"] is not None:
                    return
                i = todo.pop()
            try:
                results[i] = tasks[i]()
                finished[i] = True
            except BaseException as exc:
                with lock:
                    if not isinstance(exc, _Aborted):
                        failures.append(exc)
                stop.set()

    threads = [threading.Thread(target=work, name=f"wgflow-group-{k}", daemon=True) for k in range(min(workers, len(tasks)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():  # short waits: the main thread stays free to run the signal handler
                t.join(timeout=0.2)
    except BaseException:  # a second signal (at once): the tasks stop at their next block
        stop.set()
        raise
    if failures:
        raise failures[0]
    if not all(finished):  # a signal came before every task had started
        pending = _signals["pending"]
        if pending is not None:
            raise RunInterrupted(pending, "stopped before every group had started")
        raise RuntimeError("run_concurrently: a task neither finished nor failed")
    return results


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
    restarts from the last checkpoint. A signal under :func:`stop_on_signals` stops the
    run after a checkpoint: an ``advance`` that polls :func:`interrupt_requested` may end
    early and return ``(state, records, k)`` with the step ``k < k1`` it reached (its state
    must continue bit-identically from there); the checkpoint is then taken at ``k``.
    """
    concat_axis = concat_axis or {}
    records: dict[str, np.ndarray] = {}
    k = 0
    if threading.current_thread() is threading.main_thread():  # (run_concurrently's caller releases them)
        release_compiled_programs()  # a long study of many shapes must not run out of memory maps
    if resume:
        loaded = run_dir.load_checkpoint(key, state, fingerprint)
        if loaded is not None:
            state, records, k = loaded
    limit = os.environ.get(INTERRUPT_ENV)
    done_here = 0
    try:
        while k < total_steps:
            k1 = min(k + segment, total_steps)
            _signals["segments"][key] = (k, k1)
            out = advance(state, k, k1)
            state, rec = out[0], out[1]
            reached = int(out[2]) if len(out) > 2 else k1
            if not k < reached <= k1:
                raise RuntimeError(f"advance of {key} reached step {reached}, outside ({k}, {k1}]")
            for name, arr in rec.items():
                ax = concat_axis.get(name, 0)
                records[name] = arr if name not in records else np.concatenate([records[name], arr], axis=ax)
            k = reached
            run_dir.save_checkpoint(key, state, records, k, fingerprint)
            _stop_if_asked(f"stopped after the checkpoint at step {k} of {key}")
            if on_segment is not None:
                on_segment(k)
            done_here += 1
            if limit is not None and done_here >= int(limit) and k < total_steps:
                raise SimulatedInterrupt(f"simulated interruption after {done_here} segment(s) at step {k}")
    finally:
        _signals["segments"].pop(key, None)
    return state, records


#: the step a part's checkpoint records (:func:`run_part`): the part is done
PART_DONE = -1


def _pack_part(out: dict[str, Any]) -> dict[str, np.ndarray]:
    """A part's result as checkpoint records: numeric arrays as they are, everything else
    (numbers, strings, lists, None) as one JSON text, so that both read back exactly."""
    arrays = {k: np.asarray(v) for k, v in out.items() if isinstance(v, (np.ndarray, jax.Array)) and np.asarray(v).dtype.kind in "biufc"}
    rest = {k: v for k, v in out.items() if k not in arrays}
    arrays["__json__"] = np.asarray(json.dumps(to_jsonable(rest)))
    return arrays


def _unpack_part(records: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in records.items() if k != "__json__"}
    out.update(json.loads(str(records["__json__"])) if "__json__" in records else {})
    return out


def run_part(run_dir: RunDir, key: str, compute: Callable[[], dict[str, Any]], *, resume: bool, fingerprint: str) -> dict[str, Any]:
    """A part of a run with no steps to checkpoint in between (a ladder rung, a ResNet case, one
    flow of a comparison): ``compute()`` once, its result (a flat dict of arrays, numbers,
    strings, lists) checkpointed under ``key``; with ``resume`` a part already done is read back
    instead of computed again. Fresh or read back, the result is the checkpoint's (the same
    types either way). A signal under :func:`stop_on_signals` stops the run after the part's
    checkpoint (a second signal at once: the part then runs again)."""
    if resume:
        loaded = run_dir.load_checkpoint(key, (), fingerprint)
        if loaded is not None:
            return _unpack_part(loaded[1])
    release_compiled_programs()
    _signals["segments"][key] = (0, None)
    try:
        records = _pack_part(compute())
        run_dir.save_checkpoint(key, (), records, PART_DONE, fingerprint)
    finally:
        _signals["segments"].pop(key, None)
    _stop_if_asked(f"stopped after the checkpoint of {key}")
    return _unpack_part(records)


class Progress:
    """A progress line on a terminal, silent otherwise: the experiment and the group running, the
    steps done, the time left and a status (e.g. the current objective).

    The time left is the remaining steps at the average speed since the first update, not at
    the speed of the last seconds (rich's default): groups of different cost and compilation
    pauses move it smoothly instead of making it jump. A resumed run's first update is where
    it started, so the steps done before it do not count as fast ones."""

    def __init__(self, total: int, description: str, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total
        self.description = description
        self._origin: tuple[float, int] | None = None  # (clock, steps done) at the first update
        self._bar = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            owner = self

            class TimeLeft(ProgressColumn):
                max_refresh = 1.0  # redrawn at most once a second

                def render(self, task) -> Text:
                    left = owner.time_left(int(task.completed))
                    return Text("-:--:--" if left is None else Progress.clock(left), style="progress.remaining")

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeLeft(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total, status="")
            self._bar.start()

    def time_left(self, completed: int, now: float | None = None) -> float | None:
        """Seconds left at the average speed since the first update (None before any speed is known)."""
        import time

        if self._origin is None:
            return None
        t0, c0 = self._origin
        now = time.monotonic() if now is None else now
        done = completed - c0
        if done <= 0 or now <= t0:
            return None
        return max(0, self.total - completed) * (now - t0) / done

    @staticmethod
    def clock(seconds: float) -> str:
        """``h:mm:ss``."""
        minutes, secs = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours:d}:{minutes:02d}:{secs:02d}"

    def update(self, completed: int, status: str = "", *, group: str | None = None, now: float | None = None) -> None:
        """``completed`` steps of ``total`` done; ``status`` after the bar; ``group``: what runs now
        (e.g. ``lifted m=4,5``), shown after the experiment's name. ``now``: the clock (tests)."""
        import time

        if self._origin is None:
            self._origin = (time.monotonic() if now is None else now, completed)
        if self._bar is not None:
            description = self.description if group is None else f"{self.description} · {group}"
            self._bar.update(self._task, completed=completed, status=status, description=description)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
