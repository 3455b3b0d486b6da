"""Content fingerprints of dataset files and folders, cached so that a large dataset is hashed once.

A file's fingerprint is its size and the SHA-256 of its bytes. A folder's is the SHA-256 over the sorted list of its
files' relative paths and their fingerprints; a folder of more than :data:`SAMPLED_ABOVE` files hashes the contents
of an evenly spread sample of :data:`SAMPLE` files (the list of every file's path and size is always included), and
says so (``sampled: true``): a changed byte in an unsampled image then goes unnoticed, a renamed, added, removed or
resized file does not.

The cache (``<cache_dir>/fingerprints.json``) maps an absolute path to (size, mtime, fingerprint) per file and to the
folder's listing signature (paths, sizes, mtimes) per folder: a path whose size and mtime are unchanged is not read
again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from labkit.core.files import atomic_write_text

CACHE_FILE = "fingerprints.json"
SAMPLED_ABOVE = 2000
SAMPLE = 500
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Fingerprints:
    """``fingerprint(path)`` for files and folders, with the cache of ``cache_dir`` (None: no cache)."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.path = Path(cache_dir) / CACHE_FILE if cache_dir else None
        self.cache: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.cache = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged cache is rebuilt
                self.cache = {}
        self.dirty = False

    def _file(self, path: Path, st: os.stat_result | None = None) -> str:
        st = st or path.stat()
        key = str(path.resolve())
        hit = self.cache.get(key)
        if hit and hit.get("size") == st.st_size and hit.get("mtime") == st.st_mtime_ns:
            return hit["sha256"]
        digest = _sha256(path)
        self.cache[key] = {"size": st.st_size, "mtime": st.st_mtime_ns, "sha256": digest}
        self.dirty = True
        return digest

    def fingerprint(self, path: str | os.PathLike) -> dict[str, Any]:
        """``{"path", "kind": "file"|"folder", "size", "sha256", ["files", "sampled"]}`` of ``path``."""
        path = Path(path)
        if path.is_file():
            st = path.stat()
            return {"path": str(path.resolve()), "kind": "file", "size": st.st_size, "sha256": self._file(path, st)}
        entries = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = Path(root) / name
                st = full.stat()
                entries.append((full.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, full, st))
        listing = hashlib.sha256("\n".join(f"{r}\t{s}\t{m}" for r, s, m, _, _ in entries).encode()).hexdigest()
        key = str(path.resolve())
        hit = self.cache.get(key)
        if hit and hit.get("listing") == listing:
            return hit["fingerprint"]
        sampled = len(entries) > SAMPLED_ABOVE
        step = len(entries) / SAMPLE if sampled else 1
        chosen = {int(i * step) for i in range(SAMPLE)} if sampled else set(range(len(entries)))
        h = hashlib.sha256()
        for i, (rel, size, _, full, st) in enumerate(entries):
            content = self._file(full, st) if i in chosen else "-"
            h.update(f"{rel}\t{size}\t{content}\n".encode())
        out = {"path": key, "kind": "folder", "size": sum(e[1] for e in entries), "files": len(entries),
               "sha256": h.hexdigest(), "sampled": sampled}
        self.cache[key] = {"listing": listing, "fingerprint": out}
        self.dirty = True
        return out

    def save(self) -> None:
        """Write the cache back when it changed (a failure to write it costs only time later)."""
        if self.path is None or not self.dirty:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.cache))
            self.dirty = False
        except OSError:
            pass
