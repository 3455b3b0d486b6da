"""Files that are never half-written: atomic writes through recognisable temporaries, staged folders, figures, JSON."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from labkit.core.errors import DiskFullError

log = logging.getLogger(__name__)

# ----- atomic files ------------------------------------------------------------------------------
# Every file labkit writes goes through a temporary beside it, ``.<name>.<pid>-<host>-<random>.labkit-tmp``, that
# is renamed over the target once complete. The one recognisable pattern lets clean_stale_temporaries() remove
# what a killed process left behind (and nothing else); the pid and host tell a dead writer from a live one.
TMP_SUFFIX = ".labkit-tmp"
STALE_AFTER_S = 3600.0  # a temporary of another machine (or of an older labkit) is stale after an hour
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]+" + re.escape(TMP_SUFFIX) + "$")
# temporaries of labkit versions before this pattern: mkstemp's ".<name>.<8 chars>.tmp", figures' ".<name>.tmp.png"
_OLD_TMP_RE = re.compile(r"^\..+\.([a-z0-9_]{8}\.tmp|tmp\.png)$")
_cleaned: set[str] = set()


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh name for the temporary of ``path``, in the same folder (so the final rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{_HOST}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_temporary(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return bool(_TMP_RE.match(name) or _OLD_TMP_RE.match(name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _is_stale(entry: os.DirEntry, now: float) -> bool:
    m = _TMP_RE.match(entry.name)
    if m and m["host"] == _HOST and int(m["pid"]) != os.getpid():
        return not _pid_alive(int(m["pid"]))
    if m is None and not _OLD_TMP_RE.match(entry.name):
        return False
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def clean_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder`` (and its sub-folders if ``recursive``).

    Only files named like :func:`temporary_path` makes (or like older labkit versions did) are touched, and only
    when their writer is gone: a process of this machine that no longer runs, or one hour without a change. Real
    results are never removed. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing or unreadable folder: nothing to clean
        return removed
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False) and _is_stale(e, now):
                os.unlink(e.path)
                removed.append(Path(e.path))
            elif recursive and e.is_dir(follow_symlinks=False):
                removed += clean_stale_temporaries(e.path, recursive=True)
        except OSError:  # removed meanwhile, or no permission: leave it
            pass
    if removed:
        log.info("removed %d stale temporary file(s) left by an interrupted write in %s", len(removed), folder)
    _cleaned.add(str(folder.resolve()))
    return removed


def _clean_once(folder: Path) -> None:
    if str(folder.resolve()) not in _cleaned:
        clean_stale_temporaries(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a kill never leaves half a file.

    The file gets the permissions of a plain ``open()`` (``0o666`` less the umask), so a lab's group can read
    results; the first write into a folder removes stale temporaries left there by killed processes. A full disk
    (or quota) raises :class:`~labkit.core.errors.DiskFullError` naming the folder and the space needed; the
    temporary is removed and ``path`` keeps what it held.
    """
    path = Path(path)
    with disk_full_as_error(path, len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(path.parent)
        while True:
            tmp = temporary_path(path)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
                break
            except FileExistsError:  # pragma: no cover (a 32-bit random collision)
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


# ----- full disks ---------------------------------------------------------------------------------------------------
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(e: BaseException) -> bool:
    """An OSError of a full device or an exhausted disk quota (labkit's :class:`DiskFullError` included)."""
    return isinstance(e, OSError) and e.errno in DISK_FULL


def _size(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def _free(folder: Path) -> int | None:
    import shutil

    for p in (folder, *folder.parents):  # the nearest folder that exists is on the same device, usually
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` or its ``checkpoints/`` (what a run's files sit beside)."""
    found = []
    for d in (folder, folder / "checkpoints"):
        try:
            found += [p for p in d.glob("*.ckpt") if p.is_file() and not is_temporary(p)]
        except OSError:
            pass
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike | None = None, nbytes: int | None = None):
    """Inside this block, an OSError of a full disk (or quota) becomes :func:`disk_full`'s :class:`DiskFullError`
    about writing ``path`` (``nbytes`` long); every other error passes unchanged."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full(e, path, nbytes) from e
        raise


def disk_full(e: OSError, path: str | os.PathLike | None = None, nbytes: int | None = None) -> DiskFullError:
    """The one paragraph for a write of ``path`` (``nbytes`` long; default: the error's file) that found its device
    full: the folder, the free space there, what a checkpoint needs (the size of the one being written, or of the
    run's last one), that nothing written before is lost, and how to go on. A :class:`DiskFullError` is returned
    as it is."""
    if isinstance(e, DiskFullError):
        return e
    if path is None and e.filename:
        path = e.filename
    path = Path(path) if path is not None else None
    folder = path.parent if path is not None else None
    free = _free(folder) if folder is not None else None
    quota = e.errno != errno.ENOSPC
    what = f"{path.name} ({_size(nbytes)})" if path is not None and nbytes is not None else \
        path.name if path is not None else "a file"
    text = f"{'the disk quota is used up' if quota else 'no space left on device'}: writing {what} " + \
        (f"in {folder} failed, with {_size(free)} free there." if folder is not None else
         "failed (the system did not say in which folder).")
    last = _last_checkpoint(folder) if folder is not None else None
    if path is not None and path.suffix == ".ckpt" and nbytes is not None:
        text += f" A checkpoint of this run needs {_size(nbytes)} (the size of the one being written)"
    elif last is not None:
        text += f" A checkpoint of this run needs about {_size(last.stat().st_size)} (the size of its last one)"
    if path is not None and path.suffix == ".ckpt" or last is not None:
        text += ", and a new one is written beside the old one before it replaces it."
    run = folder.parent if folder is not None and folder.name == "checkpoints" else \
        folder if folder is not None and (folder / "config.yaml").is_file() else None
    text += (" Nothing labkit had written is lost or half-written (it writes through temporaries)"
             f"{', the last complete checkpoint included' if last is not None else ''}. Free space there"
             f"{' or raise the quota' if quota else ''}, or write elsewhere (paths.log_dir=..., paths.cache_dir=...), "
             "then run the command again")
    if run is not None and last is None:
        text += "; this run had saved no checkpoint yet, so start it again"
    else:
        text += ("; a training run continues from its last checkpoint with python train.py resume="
                 f"{run if run is not None else '<run directory>'}")
    return DiskFullError(text, folder, nbytes, free, e.errno)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure (format from the suffix, PNG by default) atomically, close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=path.suffix[1:].lower() or "png", bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


_STAGE_RE = re.compile(r"^\..+\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]+\.(staging|replaced)$")


def _left_by_a_dead_process(path: Path) -> bool:
    """A staging or replaced folder whose process is gone: of this machine and not running, or (another machine's, or
    an older labkit's without a pid) untouched for :data:`STALE_AFTER_S`."""
    m = _STAGE_RE.match(path.name)
    if m and m["host"] == _HOST:
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


@contextlib.contextmanager
def _swap_lock(final: Path):
    """An exclusive flock beside ``final`` while folders are swapped in (evaluations of one split at once take
    turns for the two renames; nothing else waits on it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    fd = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_dir(final):
    """Yield a fresh hidden folder beside ``final``, named after this process; on success it replaces ``final`` all
    at once (the previous contents are removed only after the new ones are in place), on failure it is removed and
    ``final`` is kept. Several processes may stage the same ``final`` at once (two evaluations of one split): each
    writes its own folder, the swaps take turns, the last one wins whole, and only folders of processes that are
    gone are cleaned up."""
    import shutil

    final = Path(final)
    with disk_full_as_error(final):
        final.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{os.getpid()}-{_HOST}-{secrets.token_hex(4)}"
    with _swap_lock(final):
        for left in final.parent.glob(f".{final.name}.*.replaced"):  # a kill between the two renames
            if not _left_by_a_dead_process(left):
                continue
            if final.exists():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.rename(final)
        for left in final.parent.glob(f".{final.name}.*.staging"):  # a kill while reports were written
            if _left_by_a_dead_process(left):
                shutil.rmtree(left, ignore_errors=True)
    stage = final.with_name(f".{final.name}.{mine}.staging")
    with disk_full_as_error(stage):
        stage.mkdir()  # the umask's permissions, like every labkit file
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.{mine}.replaced")
    with _swap_lock(final):
        if final.exists():
            final.rename(old)
        stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


