"""Train / eval transforms by image size. Output: float tensors in [0, 1], RGB, (3, S, S);
normalisation lives inside the model. No horizontal flip unless asked: emoji (and text,
arrows, logos) change meaning when mirrored."""

from __future__ import annotations

from typing import Tuple

from torchvision import transforms as T


def train_transform(
    image_size: int, scale: Tuple[float, float] = (0.5, 1.0), hflip: bool = False, color_jitter: float = 0.0
) -> T.Compose:
    ops = [T.RandomResizedCrop(image_size, scale=scale, antialias=True)]
    if hflip:
        ops.append(T.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops.append(T.ToTensor())
    return T.Compose(ops)


def eval_transform(image_size: int, resize_ratio: float = 1.0) -> T.Compose:
    """Resize the short side to ``image_size * resize_ratio``, centre-crop ``image_size``.

    ``resize_ratio`` 1.0 keeps whole square images (emoji); CUB/Cars papers use 256/224 = 1.143.
    """
    return T.Compose([
        T.Resize(round(image_size * resize_ratio), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
    ])
