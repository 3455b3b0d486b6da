"""Shared pieces for representation reports: feature extraction, faiss nearest neighbours, t-SNE plots."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from labkit.core.console import progress
from labkit.core.files import save_figure


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def extract(fn: Callable[[torch.Tensor], torch.Tensor], data, split: str, device=None,
            desc: str | None = None, module: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` to every evaluation batch of ``split``; returns (features float32 (N, D), labels (N,)).

    ``module`` (if given) is put in eval mode and moved to ``device`` first.
    """
    feats, labels = extract_all({"f": fn}, data, split, device=device, desc=desc, module=module)
    return feats["f"], labels


@torch.no_grad()
def extract_all(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], data, split: str, device=None,
                desc: str | None = None, module: torch.nn.Module | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Like :func:`extract` with several feature functions in one pass over ``split`` (e.g. the embedding and the
    raw pixels): ({name: features (N, D)}, labels (N,))."""
    device = device or default_device()
    if module is not None:
        module.eval().to(device)
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in fns}
    labels = []
    for x, y in progress(data.loader(split), desc=desc or f"embedding {split}"):
        x = data.transform(x.to(device), train=False)
        for name, fn in fns.items():
            feats[name].append(fn(x).flatten(1).float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    return ({name: torch.cat(f).numpy().astype(np.float32) for name, f in feats.items()},
            torch.cat(labels).numpy())


def nearest(gallery: np.ndarray, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 k-nearest neighbours with one batched faiss search: (squared distances, indices), each (Q, k)."""
    import faiss

    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index = faiss.IndexFlatL2(gallery.shape[1])
    index.add(gallery)
    return index.search(queries, k)


def knn_predict(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Majority vote among the k nearest gallery items (ties go to the nearest one's label)."""
    _, idx = nearest(gallery, queries, k)
    votes = gallery_labels[idx]  # (Q, k)
    if k == 1:
        return votes[:, 0]
    n_cls = int(gallery_labels.max()) + 1
    counts = np.zeros((len(votes), n_cls), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(votes)), k), votes.ravel()), 1.0)
    counts[np.arange(len(votes)), votes[:, 0]] += 0.5  # tie-break towards the nearest neighbour
    return counts.argmax(1)


def tsne_plot(feats: np.ndarray, labels: np.ndarray, path: str | Path, n: int = 1000, seed: int = 0,
              classes: Sequence[str] | None = None, title: str = "t-SNE") -> Path:
    """t-SNE of (at most) ``n`` seeded samples, coloured by class, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    sel = rng.choice(len(feats), size=min(n, len(feats)), replace=False)
    x, y = feats[sel], labels[sel]
    perplexity = float(min(30, max(2, len(x) // 4)))
    emb = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    uniq = np.unique(y)
    cmap = plt.get_cmap("tab10" if len(uniq) <= 10 else "tab20")
    for i, c in enumerate(uniq):
        m = y == c
        name = classes[int(c)] if classes is not None and int(c) < len(classes) else str(c)
        ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap(i % cmap.N), label=name)
    if len(uniq) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    path = Path(path)
    return save_figure(fig, path)
