"""``python train.py reproduce=<run>``: the original's figures beside the reproduction's, whether they match, and the
provenance that changed between them (:mod:`labkit.run.provenance`). Written to ``<new run>/reproduction.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.core import files
from labkit.run import directory, provenance

# figures that describe the session, not the result
NOT_COMPARED = ("wall_time_s", "session_wall_time_s", "resumes", "seed")
REPRODUCTION_FILE = "reproduction.json"


def figures(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_COMPARED}


def compare(original: Path, new: Path, tolerance: float = 0.0) -> dict[str, Any]:
    """Every figure of the original's metrics.json beside the reproduction's: equal, within ``tolerance`` (absolute)
    or different; and the provenance facts that differ."""
    a = figures(directory.read_metrics(original, strict=True))
    b = figures(directory.read_metrics(new, strict=True))
    rows = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        diff = None if x is None or y is None else y - x
        if diff == 0:
            verdict = "identical"
        elif diff is not None and abs(diff) <= tolerance:
            verdict = "within tolerance"
        else:
            verdict = "differs" if diff is not None else "missing"
        rows.append({"figure": key, "original": x, "reproduction": y, "difference": diff, "verdict": verdict})
    pa, pb = provenance.summary(provenance.latest(original)), provenance.summary(provenance.latest(new))
    changed = {k: [pa.get(k), pb.get(k)] for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
    bad = [r["figure"] for r in rows if r["verdict"] in ("differs", "missing")]
    if bad:
        verdict = "not reproduced"
    elif all(r["verdict"] == "identical" for r in rows):
        verdict = "identical"
    else:
        verdict = f"reproduced within tolerance {tolerance:g}"
    return {"original": str(original), "reproduction": str(new), "tolerance": tolerance, "verdict": verdict,
            "differing": bad, "figures": rows, "provenance_changes": changed}


def _num(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def verdict(original: Path, new: Path, tolerance: float = 0.0) -> dict[str, Any]:
    """Compare, write ``reproduction.json`` into the new run and print the side by side with its verdict."""
    result = compare(original, new, tolerance)
    files.write_json(Path(new) / REPRODUCTION_FILE, result)
    width = max(len(r["figure"]) for r in result["figures"]) if result["figures"] else 10
    lines = [f"reproduction of {original}", f"{'figure':<{width}}  {'original':>12}  {'reproduction':>12}  "
             f"{'difference':>11}  verdict"]
    for r in result["figures"]:
        lines.append(f"{r['figure']:<{width}}  {_num(r['original']):>12}  {_num(r['reproduction']):>12}  "
                     f"{_num(r['difference']):>11}  {r['verdict']}")
    if result["provenance_changes"]:
        lines.append("what changed since the original (original -> reproduction):")
        lines += [f"  {k}: {a} -> {b}" for k, (a, b) in result["provenance_changes"].items()]
    else:
        lines.append("code, libraries, machine and data: unchanged")
    lines.append(f"verdict: {result['verdict'].upper()}" + (f" ({', '.join(result['differing'])})"
                                                             if result["differing"] else ""))
    print("\n".join(lines), flush=True)
    return result
