"""Image conventions shared by data modules and models, defined once.

* :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`: the per-channel normalization of torchvision's ImageNet
  weights (the notes' ``transforms.Normalize``), used by the Caltech101/image-folder and EgoCart data.
* :func:`shorter_side_size`: the output size of torchvision's ``Resize(size)`` with an int ``size``: the
  shorter side becomes ``size``, the longer one ``int(size * long / short)`` (aspect ratio kept, rounded down).
"""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(H, W)`` of a ``height x width`` image after torchvision's ``Resize(size)``: e.g. 480x640 -> 224x298."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size
