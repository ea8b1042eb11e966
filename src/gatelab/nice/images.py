"""Images in and out: the CLI's inputs (image files or a named data set) and PNG outputs."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gatelab.data import IMAGE_DATASETS, mnist_tensors
from gatelab.errors import GatelabError
from gatelab.files import atomic_path

_MODES = {1: "L", 3: "RGB"}


# What Pillow raises on a malformed file: besides its own errors, its decoders let through
# ValueError, SyntaxError (broken PNG chunks), struct.error, EOFError and a few others.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
)


def check_image(path: str | os.PathLike, shape: tuple[int, int, int]) -> np.ndarray:
    """Open an image file, check it fits the classifier's (C, H, W), and decode it as (H, W, C) uint8.

    The one validator for every image read here. Pillow opens lazily, so the declared size is
    checked against ``shape`` *before* any pixel is decoded: a wrong-sized file or a decompression
    bomb is refused from its header. Anything Pillow cannot decode raises GatelabError naming the
    file and what is accepted.
    """
    path = Path(path)
    channels, height, width = shape
    if channels not in _MODES:
        raise GatelabError(f"images must have 1 or 3 channels, the classifier asks for {channels}")
    if not path.is_file():
        raise GatelabError(f"image file {path} does not exist")
    accepted = "give a PNG, JPEG, BMP, GIF or TIFF file Pillow can read"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
                if size != (width, height):
                    raise GatelabError(
                        f"{path} is {size[0]}x{size[1]} pixels; the classifier takes {width}x{height} "
                        "(NICE explains pixels, so images are never resampled)"
                    )
                image.load()
                pixels = np.asarray(image.convert(_MODES[channels]), dtype=np.uint8)
    except GatelabError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise GatelabError(f"{path} declares more pixels than is safe to decode ({exc}); {accepted}") from None
    except _DECODE_ERRORS as exc:
        raise GatelabError(
            f"{path} is not an image file Pillow can decode ({type(exc).__name__}: {exc}); {accepted}"
        ) from None
    if pixels.shape[:2] != (height, width):  # a decoder that disagrees with its own header
        raise GatelabError(f"{path} decodes to {pixels.shape[1]}x{pixels.shape[0]} pixels, not {width}x{height}")
    return pixels.reshape(height, width, channels)


def read_image(path: str | os.PathLike, shape: tuple[int, int, int], invert: bool = False) -> torch.Tensor:
    """One image file as a (1, C, H, W) float tensor in [0, 1], checked against the classifier's (C, H, W).

    Grayscale and colour files are converted to the classifier's channel count;
    the size must already match (NICE explains pixels, so it never resamples).
    ``invert`` turns dark-on-light drawings into MNIST's light-on-dark. Raises
    GatelabError for a missing, malformed, wrong-sized or oversized file (see :func:`check_image`).
    """
    pixels = check_image(path, shape).astype(np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    return 1 - x if invert else x


def load_inputs(
    sources: list[str], shape: tuple[int, int, int], count: int = 1000, invert: bool = False, data_root=None
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images named on the command line: a data set name (its first ``count`` test images, with labels)
    or image files (no labels). Returns images (N, C, H, W), labels or None, and a name per image."""
    if len(sources) == 1 and sources[0] in IMAGE_DATASETS:
        x, y = mnist_tensors(sources[0], "test", data_root)
        if tuple(x.shape[1:]) != tuple(shape):
            raise GatelabError(f"{sources[0]} images are {tuple(x.shape[1:])}; the classifier takes {tuple(shape)}")
        if not 1 <= count <= len(x):
            raise GatelabError(f"count must be in [1, {len(x)}] (the {sources[0]} test images), got {count}")
        return x[:count], y[:count], [f"{sources[0]}-{i:05d}" for i in range(min(count, len(x)))]
    if not sources:
        raise GatelabError(f"name image files or one data set ({', '.join(IMAGE_DATASETS)})")
    images = torch.cat([read_image(s, shape, invert) for s in sources])
    return images, None, [Path(s).stem for s in sources]


def write_png(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """A (C, H, W) or (H, W) tensor in [0, 1] as an 8-bit PNG (written to a temporary name, then renamed)."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if array.dim() == 3:
        array = array[0] if array.shape[0] == 1 else array.permute(1, 2, 0)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array.numpy()).save(tmp, format="PNG")
    return path
