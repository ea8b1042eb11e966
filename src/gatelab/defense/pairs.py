"""Defense-VAE's training pairs on disk: every attack at every ε on every image, written shard by shard.

    make_pairs(net, x_train, y_train, "pairs/")        # fgsm, rand_fgsm, cw_softmax x 4 eps: 12 pairs an image
    adversarial, clean = load_pairs("pairs/")           # uint8 memmaps, one row per pair
    purifier = DefenseVAE(VAEConfig()).fit(adversarial, clean)

The paper trains on 720,000 pairs per target model (3 attacks x 4 ε x 60,000 images), 564 MB as uint8 and four
times that as float32, so nothing here holds more than one batch of adversarial images in memory.

Folder layout: ``clean.npy`` (the images once, uint8), ``labels.npy`` (their labels, int64),
``adv-<attack>-<eps>-<k>.npy`` (uint8 adversarial images of clean rows ``start:stop`` under one attack and ε),
``index.json`` (the settings and every shard's rows), and, made by :func:`load_pairs` once all shards exist,
``pairs-adversarial.npy`` and ``pairs-clean.npy`` (one row per pair).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gatelab.defense.attacks import ATTACKS, attack, check_eps, check_images, check_model
from gatelab.errors import GatelabError, check_choice
from gatelab.files import atomic_path, write_json
from gatelab.progress import bar, say

INDEX = "index.json"
CLEAN = "clean.npy"
LABELS = "labels.npy"
PAIRS = ("pairs-adversarial.npy", "pairs-clean.npy")
PAPER_ATTACKS = ("fgsm", "rand_fgsm", "cw_softmax")
"""The paper's attacks, its CW as the authors ran it (softmax margin, see :mod:`gatelab.defense.attacks`): the default
of the training pairs and of the paper's columns."""
PAPER_EPS = (0.2, 0.25, 0.3, 0.35)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] rounded to the nearest of 0..255, as a numpy uint8 array."""
    return x.detach().mul(255.0).round_().to(torch.uint8).cpu().numpy()


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GatelabError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _shards(n: int, attacks: tuple[str, ...], eps: tuple[float, ...], shard_size: int) -> list[dict]:
    return [
        {
            "file": f"adv-{name}-{e:g}-{start // shard_size:05d}.npy",
            "attack": name,
            "eps": e,
            "start": start,
            "stop": min(start + shard_size, n),
        }
        for name in attacks
        for e in eps
        for start in range(0, n, shard_size)
    ]


def make_pairs(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    folder: str | os.PathLike,
    attacks=PAPER_ATTACKS,
    eps=PAPER_EPS,
    batch_size: int = 500,
    shard_size: int = 10_000,
    seed: int = 0,
    quiet: bool = False,
) -> Path:
    """Write (adversarial, clean) training pairs of ``images`` against ``classifier`` under ``folder``; returns it.

    Each attack in ``attacks`` (names of :data:`gatelab.defense.ATTACKS`) runs at each ε in ``eps`` on every image,
    white-box against ``classifier`` on its device, ``batch_size`` images at a time, and the results go to one uint8
    ``.npy`` shard per (attack, ε, ``shard_size`` images), each written atomically. A rerun with the same settings
    skips the shards that exist, so a killed generation continues where it stopped; other settings, or other images,
    in a folder already used are refused. ``seed`` fixes RAND+FGSM's random step (one seed per batch, so a
    regenerated shard equals the lost one).

    Quantisation: images are stored as uint8, rounded to the nearest k/255. MNIST pixels are exact there, so the
    clean side is lossless; an adversarial image moves by at most 0.5/255 ≈ 0.002 per pixel, so it may lie up to
    that far outside its ε ball, and DefenseVAE trains on these rounded images.
    """
    attacks, eps = tuple(attacks), tuple(check_eps(e) for e in eps)
    if not attacks or not eps:
        raise GatelabError("make_pairs needs at least one attack and one eps")
    for name in attacks:
        check_choice("attack", name, ATTACKS)
    if len(set(attacks)) != len(attacks) or len(set(eps)) != len(eps):
        raise GatelabError(f"attacks and eps must not repeat; got {attacks} and {eps}")
    batch_size, shard_size = _positive("batch_size", batch_size), _positive("shard_size", shard_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GatelabError(f"seed must be an integer >= 0, got {seed!r}")
    check_images(images)
    if tuple(images.shape[1:]) != (1, 28, 28):
        raise GatelabError(f"images must have shape (N, 1, 28, 28); got {tuple(images.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        raise GatelabError(f"labels must be an int64 tensor of shape ({len(images)},), one per image")
    check_model(classifier, images[:batch_size], labels[:batch_size])  # refuse a wrong model before writing

    folder = Path(folder)
    clean = to_uint8(images)
    shards = _shards(len(images), attacks, eps, shard_size)
    index = {
        "images": len(images),
        "attacks": list(attacks),
        "eps": list(eps),
        "shard_size": shard_size,
        "seed": seed,
        "shards": shards,
    }
    if (folder / INDEX).exists():
        _check_same(folder, index, clean)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        _save(folder / CLEAN, clean)
        _save(folder / LABELS, labels.cpu().numpy().astype(np.int64))
        write_json(folder / INDEX, index)

    device = next(classifier.parameters()).device
    todo = [(k, s) for k, s in enumerate(shards) if not (folder / s["file"]).exists()]
    say(f"pairs in {folder}: {len(shards) - len(todo)} of {len(shards)} shards done, {len(todo)} to make", quiet)
    if todo:
        for name in PAIRS:  # made from the old shards; load_pairs rebuilds them
            (folder / name).unlink(missing_ok=True)
    with bar(sum(s["stop"] - s["start"] for _, s in todo), desc="pairs", unit="img", quiet=quiet) as progress:
        for k, shard in todo:
            out = np.empty((shard["stop"] - shard["start"], 1, 28, 28), np.uint8)
            for b, start in enumerate(range(shard["start"], shard["stop"], batch_size)):
                stop = min(start + batch_size, shard["stop"])
                x, y = images[start:stop].to(device), labels[start:stop].to(device)
                batch_seed = int(np.random.SeedSequence([seed, k, b]).generate_state(1)[0])
                adv = attack(classifier, x, y, shard["attack"], shard["eps"], seed=batch_seed)
                out[start - shard["start"] : stop - shard["start"]] = to_uint8(adv)
                progress.update(stop - start)
            _save(folder / shard["file"], out)
            say(
                f"pairs: wrote {shard['file']} ({shard['attack']} eps {shard['eps']:g}, images "
                f"{shard['start']}:{shard['stop']}), shard {k + 1} of {len(shards)}",
                quiet,
            )
    return folder


def _read_index(folder: Path) -> dict:
    try:
        index = json.loads((folder / INDEX).read_text())
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
            raise ValueError("no shard list")
        for key in ("file", "start", "stop"):
            if not all(isinstance(s, dict) and key in s for s in index["shards"]):
                raise ValueError(f"a shard without {key!r}")
        return index
    except FileNotFoundError:
        raise GatelabError(f"{folder} holds no {INDEX}: not a pairs folder written by make_pairs") from None
    except ValueError as err:
        raise GatelabError(f"{folder / INDEX} is damaged ({err}); delete the folder and run make_pairs again") from None


def _clean(folder: Path, n: int) -> np.ndarray:
    try:
        clean = np.load(folder / CLEAN, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise GatelabError(
            f"{folder / CLEAN} cannot be read ({err}); delete the folder and run make_pairs again"
        ) from None
    if clean.dtype != np.uint8 or clean.shape != (n, 1, 28, 28):
        raise GatelabError(f"{folder / CLEAN} holds {clean.dtype} {clean.shape}, not uint8 ({n}, 1, 28, 28)")
    return clean


def _check_same(folder: Path, index: dict, clean: np.ndarray) -> None:
    """Refuse to continue a folder made with other settings or other images."""
    old = _read_index(folder)
    if old != index:
        keys = [k for k in index if old.get(k) != index[k]]
        raise GatelabError(
            f"{folder} holds pairs made with other settings ({', '.join(keys)} differ); "
            "use a new folder or delete this one"
        )
    stored = _clean(folder, index["images"])
    for start in range(0, len(clean), 10_000):
        if not np.array_equal(stored[start : start + 10_000], clean[start : start + 10_000]):
            raise GatelabError(f"{folder} holds pairs of other images; use a new folder or delete this one")


def load_pairs(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(adversarial, clean) uint8 memmaps (P, 1, 28, 28), one row per pair, for ``DefenseVAE.fit``.

    ``fit`` indexes both with one batch of row numbers, so the clean side is materialised once as a file of one row
    per pair (``pairs-clean.npy``, beside ``pairs-adversarial.npy``, the shards joined), written chunk by chunk and
    atomically; later calls only open them. All shards must exist: run make_pairs to finish a folder first.
    """
    folder = Path(folder)
    index = _read_index(folder)
    missing = [s["file"] for s in index["shards"] if not (folder / s["file"]).exists()]
    if missing:
        raise GatelabError(
            f"{folder} lacks {len(missing)} of {len(index['shards'])} shards (first {missing[0]}); "
            "rerun make_pairs with the same settings to finish them"
        )
    if not all((folder / name).exists() for name in PAIRS):
        clean = _clean(folder, index.get("images"))
        total = sum(s["stop"] - s["start"] for s in index["shards"])
        with atomic_path(folder / PAIRS[0]) as adv_tmp, atomic_path(folder / PAIRS[1]) as clean_tmp:
            adv_out = np.lib.format.open_memmap(adv_tmp, "w+", np.uint8, (total, 1, 28, 28))
            clean_out = np.lib.format.open_memmap(clean_tmp, "w+", np.uint8, (total, 1, 28, 28))
            row = 0
            for s in index["shards"]:
                size = s["stop"] - s["start"]
                try:
                    shard = np.load(folder / s["file"], mmap_mode="r")
                except (OSError, ValueError) as err:
                    raise GatelabError(
                        f"{folder / s['file']} cannot be read ({err}); delete it and rerun make_pairs"
                    ) from None
                if shard.dtype != np.uint8 or shard.shape != (size, 1, 28, 28):
                    raise GatelabError(
                        f"{folder / s['file']} holds {shard.dtype} {shard.shape}, not uint8 ({size}, 1, 28, 28); "
                        "delete it and rerun make_pairs"
                    )
                adv_out[row : row + size] = shard
                clean_out[row : row + size] = clean[s["start"] : s["stop"]]
                row += size
            adv_out.flush()
            clean_out.flush()
            del adv_out, clean_out
    total = sum(s["stop"] - s["start"] for s in index["shards"])
    joined = []
    for name in PAIRS:  # written above or by an earlier call: a damaged one is named, not a numpy traceback
        try:
            array = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise GatelabError(f"{folder / name} cannot be read ({err}); delete it and rerun make_pairs") from None
        if array.dtype != np.uint8 or array.shape != (total, 1, 28, 28):
            raise GatelabError(
                f"{folder / name} holds {array.dtype} {array.shape}, not uint8 ({total}, 1, 28, 28); "
                "delete it and rerun make_pairs"
            )
        joined.append(array)
    return tuple(joined)


def load_pair_labels(folder: str | os.PathLike) -> np.ndarray:
    """The class label of every pair's clean image (int64, one per row of :func:`load_pairs`), for the end-to-end
    fine-tuning (mode 3), which needs the labels beside the pairs."""
    folder = Path(folder)
    index = _read_index(folder)
    try:
        labels = np.load(folder / LABELS)
    except (OSError, ValueError) as err:
        raise GatelabError(
            f"{folder / LABELS} cannot be read ({err}); delete the folder and run make_pairs again"
        ) from None
    if labels.dtype != np.int64 or labels.shape != (index.get("images"),):
        raise GatelabError(f"{folder / LABELS} holds {labels.dtype} {labels.shape}, not int64 ({index.get('images')},)")
    return np.concatenate([labels[s["start"] : s["stop"]] for s in index["shards"]])


def subset_rows(arrays, k: int | None, seed: int) -> tuple:
    """A seeded random subset of ``k`` rows, kept in order, of equally long arrays (say the pairs and their labels,
    whose rows are ordered by attack); all of them when ``k`` is None or at least their length."""
    n = len(arrays[0])
    if k is None or k >= n:
        return tuple(arrays)
    rows = np.sort(np.random.default_rng(seed).choice(n, k, replace=False))
    return tuple(np.asarray(a[rows]) for a in arrays)
