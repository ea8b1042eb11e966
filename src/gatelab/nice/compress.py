"""Mixed-resolution JPEG compression driven by saliency masks (NICE, Li & Ji 2019).

NICE keeps the pixels a classifier relies on at full resolution and replaces the
rest by the mean of their ``factor x factor`` cell, so that JPEG spends few bits
on them. With ``factor = 8`` the cells coincide with JPEG's 8x8 DCT blocks: a
block that lies wholly outside the mask is constant and costs almost nothing.

Every size reported here is the length of real bytes written by Pillow's
libjpeg encoder, never an estimate.
"""

from __future__ import annotations

import io
import json
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path, write_json

TABLE_MODES = ("inline", "shared")
MAX_QUALITY = 95  # Pillow's documented useful maximum; above it files grow with no visible gain
TABLES_FILE = "tables.jpg"
INDEX_FILE = "index.json"
_INDEX_FORMAT = "gatelab.nice.compress/1"
_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CHANNEL_MODES = {1: "L", 3: "RGB"}


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise GatelabError(f"factor must be an integer >= 1, got {factor!r}")
    return int(factor)


def _check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= MAX_QUALITY:
        raise GatelabError(
            f"JPEG quality must be an integer from 1 to {MAX_QUALITY} (Pillow's useful range), got {quality!r}"
        )
    return int(quality)


def _check_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise GatelabError(f"{what} must be a float tensor of shape (N, C, H, W), got {shape}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise GatelabError(f"{what} must hold at least one non-empty image, got shape {tuple(images.shape)}")
    return images


def lowres(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Replace every pixel by the mean of its ``factor x factor`` cell, keeping the size (N, C, H, W).

    Cells sit on a grid anchored at the top-left corner, so with ``factor = 8``
    they are JPEG's DCT blocks. Where H or W is not a multiple of ``factor`` the
    last cells are partial and hold the mean of the pixels they actually cover.
    """
    images = _check_images(images)
    f = _check_factor(factor)
    n, c, h, w = images.shape
    hc, wc = -(-h // f), -(-w // f)
    padded = F.pad(images, (0, wc * f - w, 0, hc * f - h))
    sums = padded.reshape(n, c, hc, f, wc, f).sum(dim=(3, 5))
    rows = (h - torch.arange(hc, device=images.device) * f).clamp(max=f)
    cols = (w - torch.arange(wc, device=images.device) * f).clamp(max=f)
    means = sums / (rows[:, None] * cols[None, :]).to(images.dtype)
    return means.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)[:, :, :h, :w]


def _masks_like(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Validate ``masks`` against ``images`` and return them as (N or 1, 1, H, W) floats."""
    if not isinstance(masks, torch.Tensor):
        raise GatelabError(f"masks must be a tensor, got {type(masks).__name__}")
    shape = tuple(masks.shape)
    accepted = "(N, 1, H, W), (N, H, W) or (H, W)"
    if masks.dim() == 2:
        masks = masks[None, None]
    elif masks.dim() == 3:
        masks = masks[:, None]
    elif masks.dim() != 4 or masks.shape[1] != 1:
        raise GatelabError(f"masks must have shape {accepted}, got {shape}")
    n, _, h, w = images.shape
    if masks.shape[0] == 0:
        raise GatelabError(f"masks hold no mask (shape {shape}); need one per image, or one (H, W) for all")
    if masks.shape[0] not in (1, n) or masks.shape[2:] != images.shape[2:]:
        raise GatelabError(
            f"masks of shape {shape} do not fit images of shape {tuple(images.shape)}; "
            f"accepted: ({n}, 1, {h}, {w}), ({n}, {h}, {w}) or ({h}, {w})"
        )
    masks = masks.to(device=images.device, dtype=images.dtype)
    if torch.isnan(masks).any():
        raise GatelabError("masks contain NaN; mask values must lie in [0, 1]")
    if masks.min() < 0 or masks.max() > 1:
        raise GatelabError(f"mask values must lie in [0, 1], got range [{masks.min():g}, {masks.max():g}]")
    return masks


def mixed_resolution(images: torch.Tensor, masks: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Keep pixels where ``mask > 0`` exactly and replace the others by their :func:`lowres` value.

    ``images`` is (N, C, H, W). ``masks`` is (N, 1, H, W) or (N, H, W), one mask
    per image, or (H, W) or a batch of one, one mask for every image. Values lie
    in [0, 1] and any value above 0 counts as selected (NICE's masks are gate
    probabilities).
    """
    images = _check_images(images)
    keep = _masks_like(images, masks) > 0
    return torch.where(keep, images, lowres(images, factor))


def random_cell_masks(images: torch.Tensor, factor: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random masks (N, 1, H, W) of whole ``factor x factor`` cells, each image keeping its own random fraction.

    Every image draws a keep probability uniformly from [0, 1] and keeps each cell
    with it, so a batch spans everything from fully subsampled to untouched.
    ``mixed_resolution(images, random_cell_masks(images))`` is the augmentation that
    teaches a classifier the images NICE's compression produces.
    """
    images = _check_images(images)
    f = _check_factor(factor)
    n, _, h, w = images.shape
    keep = torch.rand(n, 1, 1, 1, generator=generator)
    cells = (torch.rand(n, 1, -(-h // f), -(-w // f), generator=generator) < keep).to(images.dtype)
    return cells.repeat_interleave(f, 2).repeat_interleave(f, 3)[..., :h, :w].to(images.device)


def _check_tables_mode(tables: str, optimize: bool) -> str:
    check_choice("tables mode", tables, TABLE_MODES)
    if optimize and tables == "shared":
        raise GatelabError(
            "optimize=True puts image-specific Huffman tables into every stream, which defeats "
            "tables='shared'; use optimize=False with 'shared', or tables='inline'"
        )
    return tables


def jpeg_tables(quality: int = 75) -> bytes:
    """The tables-only JPEG datastream (SOI, DQT, DHT, EOI) that abbreviated streams of this quality need.

    libjpeg writes the luminance and chrominance tables whatever the image mode, so
    one stream serves both grayscale and RGB images.
    """
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "JPEG", quality=_check_quality(quality), streamtype=1)
    return buffer.getvalue()


def encode_jpeg(images: torch.Tensor, quality: int = 75, tables: str = "inline", optimize: bool = False) -> list[bytes]:
    """Encode images (N, C, H, W) in [0, 1], C = 1 (grayscale) or 3 (RGB), as one JPEG each.

    ``tables="inline"`` gives ordinary standalone JFIF files. ``tables="shared"``
    gives abbreviated image-only streams without quantisation and Huffman tables;
    these are stored once in :func:`jpeg_tables` ``(quality)``, and
    :func:`decode_jpeg` needs that stream to read them. ``optimize=True`` lets
    libjpeg fit Huffman tables to each image: pixels are unchanged and files are
    smaller, but the tables then travel with each image, so it requires "inline".
    Pixels are rounded to 8 bits before encoding.
    """
    images = _check_images(images)
    quality = _check_quality(quality)
    _check_tables_mode(tables, optimize)
    channels = images.shape[1]
    if channels not in _CHANNEL_MODES:
        raise GatelabError(f"JPEG images need 1 (grayscale) or 3 (RGB) channels, got {channels}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise GatelabError("images to encode must be finite with values in [0, 1]")
    pixels = (images.detach() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if channels == 1:
        pixels = pixels[..., 0]
    options = {"quality": quality, "optimize": bool(optimize), "streamtype": 2 if tables == "shared" else 0}
    blobs = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array, _CHANNEL_MODES[channels]).save(buffer, "JPEG", **options)
        blobs.append(buffer.getvalue())
    return blobs


def _check_tables_stream(tables: bytes, what: str) -> None:
    if not (isinstance(tables, bytes) and tables.startswith(_SOI) and tables.endswith(_EOI)) or _SOS in tables:
        raise GatelabError(
            f"{what} is not a tables-only JPEG datastream (SOI ... EOI, no image); make one with jpeg_tables(quality)"
        )


def _decode_one(blob: bytes, tables: bytes | None, what: str) -> np.ndarray:
    """Decode one JPEG to a (C, H, W) uint8 array; ``what`` names it in errors."""
    if not isinstance(blob, bytes) or not blob.startswith(_SOI):
        raise GatelabError(f"{what} is not a JPEG datastream (it does not start with the SOI marker FF D8)")
    data = blob if tables is None else tables[:-2] + blob[2:]
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            image.load()
            array = np.asarray(image)
    except OSError as error:
        hint = "" if tables is not None else "; if it is an abbreviated stream, pass its tables"
        raise GatelabError(f"{what} is not a decodable JPEG ({error}){hint}") from error
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3 and array.shape[2] == 3:
        return array.transpose(2, 0, 1)
    raise GatelabError(f"{what} decodes to shape {array.shape}; accepted: grayscale or RGB")


def _stack(arrays: Sequence[np.ndarray], names: Sequence[str]) -> torch.Tensor:
    for name, array in zip(names, arrays):
        if array.shape != arrays[0].shape:
            raise GatelabError(
                f"{name} has shape {array.shape} (C, H, W) but {names[0]} has {arrays[0].shape}; "
                "one batch needs one shape"
            )
    return torch.from_numpy(np.stack(arrays)).float().div_(255.0)


def decode_jpeg(blobs: Sequence[bytes], tables: bytes | None = None) -> torch.Tensor:
    """Decode JPEGs of one shape into a float tensor (N, C, H, W) in [0, 1].

    For abbreviated streams pass the tables-only stream: it is spliced, without
    its EOI, in front of each image stream without its SOI, which is exactly the
    standalone file libjpeg would have written.
    """
    if len(blobs) == 0:
        raise GatelabError("no JPEG streams to decode; pass at least one")
    if tables is not None:
        _check_tables_stream(tables, "tables")
    names = [f"JPEG {i}" for i in range(len(blobs))]
    return _stack([_decode_one(blob, tables, name) for blob, name in zip(blobs, names)], names)


@dataclass
class CompressionResult:
    """Plain and mixed-resolution JPEGs of the same images, encoded with identical settings.

    ``plain_bytes`` and ``mixed_bytes`` are per-image file sizes; with shared
    tables they exclude the tables stream, whose size ``tables_bytes`` is reported
    once. ``plain`` and ``mixed`` are the decoded images (N, C, H, W) in [0, 1];
    ``mask_density`` is the fraction of pixels each mask keeps at full resolution.
    """

    plain_blobs: list[bytes]
    mixed_blobs: list[bytes]
    plain_bytes: np.ndarray
    mixed_bytes: np.ndarray
    tables: bytes | None
    plain: torch.Tensor
    mixed: torch.Tensor
    mask_density: np.ndarray
    quality: int
    factor: int
    optimize: bool

    @property
    def tables_bytes(self) -> int:
        """Size of the shared tables stream, 0 for inline tables."""
        return 0 if self.tables is None else len(self.tables)

    @property
    def size_ratio(self) -> float:
        """Total mixed bytes over total plain bytes, the shared tables counted once on each side."""
        return float(self.mixed_bytes.sum() + self.tables_bytes) / float(self.plain_bytes.sum() + self.tables_bytes)


def compress(
    images: torch.Tensor,
    masks: torch.Tensor,
    quality: int = 75,
    factor: int = 8,
    tables: str = "inline",
    optimize: bool = False,
) -> CompressionResult:
    """JPEG-encode ``images`` plainly and at mixed resolution under ``masks``, and measure both.

    ``masks`` follow :func:`mixed_resolution`; an all-zero mask is allowed and
    subsamples its whole image. Both versions go through :func:`encode_jpeg`
    with the same ``quality``, ``tables`` and ``optimize``, so their sizes differ
    only because of the masks.
    """
    images = _check_images(images)
    quality = _check_quality(quality)
    factor = _check_factor(factor)
    _check_tables_mode(tables, optimize)
    full = _masks_like(images, masks) > 0
    mixed = torch.where(full, images, lowres(images, factor))
    table_stream = jpeg_tables(quality) if tables == "shared" else None
    plain_blobs = encode_jpeg(images, quality, tables, optimize)
    mixed_blobs = encode_jpeg(mixed, quality, tables, optimize)
    density = full.flatten(1).float().mean(1).expand(images.shape[0])
    return CompressionResult(
        plain_blobs=plain_blobs,
        mixed_blobs=mixed_blobs,
        plain_bytes=np.array([len(b) for b in plain_blobs], dtype=np.int64),
        mixed_bytes=np.array([len(b) for b in mixed_blobs], dtype=np.int64),
        tables=table_stream,
        plain=decode_jpeg(plain_blobs, table_stream),
        mixed=decode_jpeg(mixed_blobs, table_stream),
        mask_density=density.cpu().numpy().astype(np.float64),
        quality=quality,
        factor=factor,
        optimize=bool(optimize),
    )


def _check_names(names: Sequence[str], count: int) -> list[str]:
    names = list(names)
    if len(names) != count:
        raise GatelabError(f"got {len(names)} names for {count} images; need one name per image")
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() == Path(TABLES_FILE).stem:
            raise GatelabError(
                f"bad image name {name!r}: names are file stems of letters, digits, '.', '_', '-' "
                f"that start with a letter or digit, and {Path(TABLES_FILE).stem!r} is reserved"
            )
    if len(set(names)) != len(names):
        raise GatelabError("image names must be unique")
    return names


def save_jpegs(folder: str | os.PathLike, result: CompressionResult, names: Sequence[str] | None = None) -> Path:
    """Write each mixed-resolution JPEG of ``result`` to ``folder/NAME.jpg``, with an ``index.json``.

    With shared tables the ``.jpg`` files are abbreviated streams and the tables
    go once to ``tables.jpg``. The index (names, byte counts, mask densities,
    settings) is written last, so a folder with an index is complete.
    Default names are zero-padded image numbers.
    """
    folder = Path(folder)
    count = len(result.mixed_blobs)
    names = _check_names([f"{i:0{len(str(count - 1))}d}" for i in range(count)] if names is None else names, count)
    (folder / INDEX_FILE).unlink(missing_ok=True)  # an index left from an earlier save would describe old files
    if result.tables is not None:
        with atomic_path(folder / TABLES_FILE) as tmp:
            tmp.write_bytes(result.tables)
    for name, blob in zip(names, result.mixed_blobs):
        with atomic_path(folder / f"{name}.jpg") as tmp:
            tmp.write_bytes(blob)
    write_json(
        folder / INDEX_FILE,
        {
            "format": _INDEX_FORMAT,
            "quality": result.quality,
            "factor": result.factor,
            "optimize": result.optimize,
            "tables_bytes": None if result.tables is None else result.tables_bytes,
            "images": [
                {"name": name, "bytes": int(size), "plain_bytes": int(plain), "mask_density": float(density)}
                for name, size, plain, density in zip(
                    names, result.mixed_bytes, result.plain_bytes, result.mask_density
                )
            ],
        },
    )
    return folder


@dataclass
class JpegFolder:
    """What :func:`load_jpegs` read: the raw streams, shared tables (or None), decoded images and the index."""

    names: list[str]
    blobs: list[bytes]
    tables: bytes | None
    images: torch.Tensor
    mask_density: np.ndarray
    index: dict


def _read_exact(path: Path, size: object) -> bytes:
    if not path.is_file():
        raise GatelabError(f"{path} is listed in the index but missing")
    data = path.read_bytes()
    if len(data) != size:
        raise GatelabError(f"{path} has {len(data)} bytes but the index says {size}; the folder is damaged")
    return data


def load_jpegs(folder: str | os.PathLike) -> JpegFolder:
    """Read back a folder written by :func:`save_jpegs` and decode its images.

    Only the files named in ``index.json`` are read; any other file is ignored.
    """
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise GatelabError(f"{index_path} not found; load_jpegs reads folders written by save_jpegs")
    try:
        index = json.loads(index_path.read_text())
        fmt = index["format"]
        entries = index["images"]
        names = [entry["name"] for entry in entries]
        sizes = [entry["bytes"] for entry in entries]
        densities = [float(entry["mask_density"]) for entry in entries]
        table_size = index["tables_bytes"]
    except (ValueError, KeyError, TypeError) as error:
        raise GatelabError(f"{index_path} is not a valid save_jpegs index ({error!r})") from error
    if fmt != _INDEX_FORMAT:
        raise GatelabError(f"{index_path} has format {fmt!r}; accepted: {_INDEX_FORMAT!r}")
    if not entries:
        raise GatelabError(f"{index_path} lists no images")
    names = _check_names(names, len(entries))
    tables = None
    if table_size is not None:
        tables = _read_exact(folder / TABLES_FILE, table_size)
        _check_tables_stream(tables, str(folder / TABLES_FILE))
    paths = [folder / f"{name}.jpg" for name in names]
    blobs = [_read_exact(path, size) for path, size in zip(paths, sizes)]
    arrays = [_decode_one(blob, tables, str(path)) for blob, path in zip(blobs, paths)]
    return JpegFolder(
        names=names,
        blobs=blobs,
        tables=tables,
        images=_stack(arrays, [str(p) for p in paths]),
        mask_density=np.array(densities, dtype=np.float64),
        index=index,
    )
