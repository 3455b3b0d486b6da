"""An Optuna study journal that survives a worker killed while writing it.

The journal (Optuna's ``JournalFileBackend``: one file of JSON records, one a line, appended under a symlink lock that
works on NFS) is what every worker of a search reads and appends. A worker killed in the middle of an append (OOM,
SIGKILL, a node lost) leaves its last line without its newline. Optuna's reader skips such a last line, but the next
append is glued onto it: that record is lost, and the file now holds a line in its middle that no reader can parse, so
every worker's next read fails (optuna #5138 on NFS). :class:`RepairingJournalFileBackend` repairs the torn line
(:func:`repair_torn_tail`) under the journal's lock when the storage is opened and before every append, with one
warning per torn line, and the search goes on.

Optuna is imported here at the top: :mod:`labkit.loggers.optuna` imports this module only when it opens a journal.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

log = logging.getLogger("labkit")


def repair_torn_tail(path: Path) -> str | None:
    """End a journal file whose last line was torn (no newline). A torn line holding a whole record (only the newline
    is missing) gets its newline; a partial record is cut off (its writer died before it counted). Call it under the
    journal's lock. Returns what was done, in words, or None when the file ends well."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        start, pos = 0, size
        while pos > 0:  # the last newline, read backwards
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            found = f.read(step).rfind(b"\n")
            if found >= 0:
                start = pos + found + 1
                break
        f.seek(start)
        tail = f.read()
        try:
            whole = isinstance(json.loads(tail), dict)
        except ValueError:
            whole = False
        if whole:
            f.seek(size)
            f.write(b"\n")
            done = f"its last record ({len(tail)} bytes) had lost its newline, which was added"
        else:
            f.truncate(start)
            done = f"its last line was cut short ({len(tail)} bytes without their newline), and was removed"
        f.flush()
        os.fsync(f.fileno())
    return done


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class RepairingJournalFileBackend(JournalFileBackend):
    """Optuna's ``JournalFileBackend`` with its torn last line repaired under the journal's lock when it is opened and
    before every append (one warning per torn line). The lock is Optuna's default (``<file>.lock``, a symlink), so
    plain Optuna processes may share the file; an append writes Optuna's bytes (one compact JSON record a line)."""

    def __init__(self, file_path: str) -> None:
        self.journal_path = Path(file_path)
        self.journal_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self.journal_lock)
        if not _ends_with_newline(self.journal_path):
            self.journal_lock.acquire()
            try:
                done = repair_torn_tail(self.journal_path)
            finally:
                self.journal_lock.release()
            self.repaired(done)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(record, separators=(",", ":")) for record in logs) + "\n"
        self.journal_lock.acquire()
        try:
            done = repair_torn_tail(self.journal_path)
            with open(self.journal_path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        finally:
            self.journal_lock.release()
        self.repaired(done)

    def repaired(self, done: str | None) -> None:
        if done:
            log.warning("The study's journal %s ended in a torn line, left by a worker stopped while writing: %s. The "
                        "search continues.", self.journal_path, done)
