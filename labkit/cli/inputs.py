"""The image files ``predict.py`` (and ``labkit.api.Run.predict``) is given: files, folders and globs, checked
before anything heavy is imported, so that ``inputs=<a glob that matches nothing>`` is refused at once."""
from __future__ import annotations

import glob
from pathlib import Path

from omegaconf import ListConfig

from labkit.core.errors import LabkitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class NoInputsError(LabkitError, FileNotFoundError):
    """``inputs`` named no readable image."""


def as_list(inputs) -> list[str]:
    if inputs is None:
        return []
    if isinstance(inputs, (list, tuple, ListConfig)):
        return [str(i) for i in inputs]
    return [str(inputs)]


def collect_inputs(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files to read, [(name, why skipped)]) from image files, folders (searched recursively for image
    extensions) and glob patterns, in the order given, without duplicates."""
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in as_list(inputs):
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            files += found
        elif p.is_file():
            files.append(p)
        elif glob.has_magic(item):
            matched = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
            files += matched
            if not matched:
                missing.append((item, "the pattern matches no file"))
        else:
            missing.append((item, "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def no_inputs(inputs, skipped: list[tuple[str, str]]) -> NoInputsError:
    given = ", ".join(as_list(inputs)) or "nothing"
    why = "; ".join(f"{n} ({r})" for n, r in skipped[:5])
    return NoInputsError(
        f"inputs={given} gave no readable image{': ' + why if why else ''}. Give image files, a folder of "
        f"images ({', '.join(IMAGE_EXTENSIONS)}) or a quoted glob, e.g. python predict.py run=<run dir> "
        f"'inputs=photos/*.png' (several: 'inputs=[a.png,b.jpg]').")


def check(cfg) -> None:
    """predict.py's pre-flight: at least one input file exists (torch is not imported for this)."""
    found, skipped = collect_inputs(cfg.get("inputs"))
    if not found:
        raise no_inputs(cfg.get("inputs"), skipped)
