"""NICE's mixed-resolution JPEG compression: the cell averages, the masks, and real JPEG bytes."""

import json
import re

import pytest
import torch

from gatelab.data.mnist import mnist_tensors
from gatelab.errors import GatelabError
from gatelab.nice.compress import (
    compress,
    decode_jpeg,
    encode_jpeg,
    jpeg_tables,
    load_jpegs,
    lowres,
    mixed_resolution,
    random_cell_masks,
    save_jpegs,
)


@pytest.fixture(scope="module")
def fashion():
    images, _ = mnist_tensors("fashion-mnist", "test")
    return images[:200].clone()


def centred_square(size: int = 28, side: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size)
    start = (size - side) // 2
    mask[start : start + side, start : start + side] = 1
    return mask


def test_lowres_matches_hand_computed_cells_including_partial_edges():
    x = torch.arange(1.0, 16.0).reshape(1, 1, 3, 5)  # rows 1..5, 6..10, 11..15
    images = torch.cat([x, 10 * x], dim=1)
    # factor 2: full cell {1,2,6,7}, edge cells {5,10}, {11,12}, {13,14} and the corner {15}
    expected = torch.tensor([[4.0, 4.0, 6.0, 6.0, 7.5], [4.0, 4.0, 6.0, 6.0, 7.5], [11.5, 11.5, 13.5, 13.5, 15.0]])
    out = lowres(images, 2)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], 10 * expected)  # channels are averaged separately
    torch.testing.assert_close(lowres(images, 1), images)
    torch.testing.assert_close(lowres(x, 7), torch.full_like(x, 8.0))  # one partial cell: the global mean


def test_lowres_cells_are_anchored_top_left_and_average_real_pixels_only():
    images = torch.rand(2, 3, 20, 19, dtype=torch.float64)
    out = lowres(images, 8)
    for top in range(0, 20, 8):
        for left in range(0, 19, 8):
            cell = images[:, :, top : top + 8, left : left + 8]
            mean = cell.mean(dim=(2, 3), keepdim=True).expand_as(cell)
            torch.testing.assert_close(out[:, :, top : top + 8, left : left + 8], mean)


def test_mixed_resolution_keeps_masked_pixels_exactly_and_replaces_the_rest():
    images = torch.rand(3, 2, 16, 13)
    masks = torch.rand(3, 1, 16, 13)
    masks[masks < 0.6] = 0  # any value above 0, however small, keeps the pixel
    masks[0, 0, 0, 0] = 1e-6
    out = mixed_resolution(images, masks, factor=4)
    keep = (masks > 0).expand_as(images)
    assert 0.2 < keep.float().mean() < 0.6
    assert torch.equal(out[keep], images[keep])
    assert torch.equal(out[~keep], lowres(images, 4)[~keep])
    assert not torch.equal(out[~keep], images[~keep])
    assert torch.equal(mixed_resolution(images, masks[:, 0], factor=4), out)  # (N, H, W) means the same
    shared = mixed_resolution(images, masks[1, 0], factor=4)  # (H, W) is one mask for every image
    assert torch.equal(shared, mixed_resolution(images, masks[1:2].expand(3, 1, 16, 13), factor=4))


def test_all_ones_mask_gives_the_plain_jpeg_byte_for_byte(fashion):
    result = compress(fashion[:20], torch.ones(20, 1, 28, 28), quality=75)
    assert result.mixed_blobs == result.plain_blobs
    assert result.size_ratio == 1.0
    assert torch.equal(result.mixed, result.plain)
    assert (result.mask_density == 1.0).all()


@pytest.mark.parametrize("tables", ["inline", "shared"])
@pytest.mark.parametrize("quality", [75, 90])
def test_sparse_mask_gives_smaller_files_than_plain_jpeg_on_fashion_mnist(fashion, tables, quality):
    mask = centred_square()
    result = compress(fashion, mask, quality=quality, tables=tables)
    assert result.plain.shape == result.mixed.shape == (200, 1, 28, 28)
    assert result.plain_bytes.tolist() == [len(b) for b in result.plain_blobs]
    assert result.mixed_bytes.tolist() == [len(b) for b in result.mixed_blobs]
    assert (result.mixed_bytes < result.plain_bytes).all()
    assert result.size_ratio < (0.8 if tables == "inline" else 0.5)
    expected_tables = len(jpeg_tables(quality)) if tables == "shared" else 0
    assert result.tables_bytes == expected_tables
    total_mixed, total_plain = result.mixed_bytes.sum(), result.plain_bytes.sum()
    assert result.size_ratio == pytest.approx((total_mixed + expected_tables) / (total_plain + expected_tables))
    assert result.mask_density == pytest.approx(64 / 784)
    keep = mask.bool().expand_as(fashion)
    assert (result.plain - fashion).abs().mean() < 0.02  # both decode to the images they encode
    assert (result.mixed - fashion)[keep].abs().mean() < 0.03
    mixed_input = mixed_resolution(fashion, mask)
    assert (result.mixed - mixed_input).abs().mean() < 0.02


def test_a_mask_on_one_jpeg_block_costs_less_than_the_same_pixels_across_four(fashion):
    # lowres cells sit on JPEG's 8x8 grid: a kept block leaves every other block constant, whereas the same 64
    # pixels straddling four blocks make all four non-constant (measured: 18,545 against 25,451 bytes)
    aligned, straddling = torch.zeros(28, 28), centred_square()
    aligned[8:16, 8:16] = 1
    cost = {
        name: compress(fashion, m, tables="shared").mixed_bytes.sum() for name, m in (("a", aligned), ("s", straddling))
    }
    assert cost["a"] < 0.8 * cost["s"]


def test_all_zero_mask_subsamples_the_whole_image(fashion):
    aligned = compress(fashion[:10], torch.zeros(10, 28, 28), quality=75)  # cells are the DCT blocks
    assert (aligned.mask_density == 0).all()
    assert (aligned.mixed - lowres(fashion[:10], 8)).abs().mean() < 0.005
    assert aligned.size_ratio < 0.7
    fine = compress(fashion[:10], torch.zeros(10, 28, 28), quality=75, factor=4)
    assert (fine.mixed - lowres(fashion[:10], 4)).abs().mean() < 0.02
    assert aligned.size_ratio < fine.size_ratio < 1


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_shared_tables_decode_to_the_same_pixels_as_inline_files(fashion, quality):
    channels = [fashion[:6, 0], fashion[6:12, 0].flip(-1), fashion[12:18, 0].transpose(1, 2)]
    rgb = torch.stack(channels, dim=1).contiguous()
    for images in (fashion[:20], rgb):
        inline = encode_jpeg(images, quality, tables="inline")
        short = encode_jpeg(images, quality, tables="shared")
        tables = jpeg_tables(quality)
        assert b"\xff\xdb" not in short[0] and b"\xff\xdb" in tables  # quantisation tables moved out
        assert all(len(s) < len(i) for s, i in zip(short, inline))
        decoded = decode_jpeg(short, tables)
        assert decoded.shape == images.shape
        assert torch.equal(decoded, decode_jpeg(inline))
    with pytest.raises(GatelabError, match="tables"):
        decode_jpeg(short)  # an abbreviated stream cannot be read alone
    with pytest.raises(GatelabError, match="tables-only"):
        decode_jpeg(short, inline[0])


def test_optimize_shrinks_files_without_changing_pixels(fashion):
    plain = encode_jpeg(fashion[:20], 75)
    optimized = encode_jpeg(fashion[:20], 75, optimize=True)
    assert sum(map(len, optimized)) < 0.85 * sum(map(len, plain))
    assert torch.equal(decode_jpeg(optimized), decode_jpeg(plain))
    result = compress(fashion[:20], centred_square(), optimize=True)
    assert result.mixed_blobs == encode_jpeg(mixed_resolution(fashion[:20], centred_square()), 75, optimize=True)
    with pytest.raises(GatelabError, match="defeats"):
        encode_jpeg(fashion[:2], 75, tables="shared", optimize=True)


@pytest.mark.parametrize("tables", ["inline", "shared"])
def test_save_and_load_round_trip(fashion, tmp_path, tables):
    masks = torch.zeros(12, 1, 28, 28)
    masks[:, :, 4:20, 6:22] = torch.rand(12, 1, 16, 16)
    result = compress(fashion[:12], masks, quality=80, tables=tables)
    folder = save_jpegs(tmp_path / "out", result)
    assert (folder / "tables.jpg").exists() == (tables == "shared")
    loaded = load_jpegs(folder)
    assert loaded.names == [f"{i:02d}" for i in range(12)]
    assert loaded.blobs == result.mixed_blobs
    assert loaded.tables == result.tables
    assert torch.equal(loaded.images, result.mixed)
    assert loaded.mask_density.tolist() == pytest.approx(result.mask_density.tolist())
    index = json.loads((folder / "index.json").read_text())
    assert [entry["bytes"] for entry in index["images"]] == result.mixed_bytes.tolist()
    assert [(folder / f"{name}.jpg").stat().st_size for name in loaded.names] == result.mixed_bytes.tolist()
    names = [f"shirt-{i}" for i in range(12)]
    assert load_jpegs(save_jpegs(tmp_path / "named", result, names)).names == names


def _bad_calls(images):
    ones = torch.ones(4, 1, 28, 28)
    nan_mask = ones.clone()
    nan_mask[2, 0, 3, 3] = float("nan")
    return {
        "mask spatial size": (
            lambda: compress(images, torch.ones(4, 1, 27, 28)),
            r"\(4, 1, 27, 28\).*\(4, 1, 28, 28\)",
        ),
        "mask channels": (lambda: mixed_resolution(images, torch.ones(4, 2, 28, 28)), r"\(N, 1, H, W\)"),
        "mask batch": (lambda: compress(images, torch.ones(3, 28, 28)), r"\(3, 28, 28\)"),
        "empty mask batch": (lambda: compress(images, torch.ones(0, 28, 28)), "no mask"),
        "nan mask": (lambda: compress(images, nan_mask), "NaN"),
        "mask range": (lambda: compress(images, 2 * ones), r"\[0, 1\]"),
        "quality 0": (lambda: compress(images, ones, quality=0), "1 to 95"),
        "quality 101": (lambda: encode_jpeg(images, quality=101), "1 to 95"),
        "quality float": (lambda: jpeg_tables(75.0), "integer"),
        "tables mode": (lambda: compress(images, ones, tables="external"), "inline, shared"),
        "factor": (lambda: lowres(images, 0), "integer >= 1"),
        "empty batch": (lambda: compress(images[:0], ones[:0]), "at least one"),
        "integer images": (lambda: encode_jpeg((images * 255).to(torch.uint8)), "float tensor"),
        "channels": (lambda: encode_jpeg(images.expand(4, 2, 28, 28)), "1 \\(grayscale\\) or 3"),
        "range": (lambda: encode_jpeg(images * 2), r"\[0, 1\]"),
        "no streams": (lambda: decode_jpeg([]), "at least one"),
        "not jpeg": (lambda: decode_jpeg([b"\x89PNG\r\n"]), "JPEG 0 is not a JPEG"),
    }


@pytest.mark.parametrize("case", list(_bad_calls(torch.zeros(4, 1, 28, 28))))
def test_bad_input_raises_a_clear_error(fashion, case):
    call, message = _bad_calls(fashion[:4])[case]
    with pytest.raises(GatelabError, match=message):
        call()


def test_bad_names_are_rejected(fashion, tmp_path):
    result = compress(fashion[:2], centred_square())
    for names in (["a"], ["a", "a"], ["../up", "b"], ["tables", "b"]):
        with pytest.raises(GatelabError, match="name"):
            save_jpegs(tmp_path, result, names)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["garbage jpeg", "broken scan", "truncated", "missing", "index json", "tables"])
def test_load_names_the_malformed_file(fashion, tmp_path, damage):
    folder = save_jpegs(tmp_path, compress(fashion[:3], centred_square(), tables="shared"))
    victim = folder / "1.jpg"
    data = victim.read_bytes()
    if damage == "garbage jpeg":
        victim.write_bytes(b"\x00" * len(data))
    elif damage == "broken scan":
        victim.write_bytes(data[:2] + b"\x00" * (len(data) - 2))
    elif damage == "truncated":
        victim.write_bytes(data[:-10])
    elif damage == "missing":
        victim.unlink()
    elif damage == "index json":
        victim = folder / "index.json"
        victim.write_text('{"format": "gatelab.nice.compress/1", "images": [')
    else:
        victim = folder / "tables.jpg"
        tables = victim.read_bytes()
        victim.write_bytes(b"\xff\xd8\xff\xda" + tables[4:])
    with pytest.raises(GatelabError, match=re.escape(str(victim))):
        load_jpegs(folder)
    (folder / "index.json").unlink()
    with pytest.raises(GatelabError, match="index.json not found"):
        load_jpegs(folder)


def test_random_cell_masks_keep_whole_cells_at_a_fraction_that_varies_by_image():
    images = torch.rand(200, 1, 28, 28)
    masks = random_cell_masks(images, 8, torch.Generator().manual_seed(0))
    assert masks.shape == (200, 1, 28, 28) and set(masks.unique().tolist()) <= {0.0, 1.0}
    cells = masks[:, :, ::8, ::8]  # one pixel per cell, the partial edge cells included
    assert torch.equal(masks, cells.repeat_interleave(8, 2).repeat_interleave(8, 3)[..., :28, :28])
    kept = cells.flatten(1).mean(1)
    assert kept.min() < 0.15 and kept.max() > 0.85 and 0.35 < kept.mean() < 0.65  # keep fraction ~ U(0, 1)
    assert torch.equal(masks, random_cell_masks(images, 8, torch.Generator().manual_seed(0)))  # seeded
    mixed = mixed_resolution(images, masks, 8)
    assert torch.equal(mixed[masks.bool()], images[masks.bool()])
    assert torch.equal(mixed[~masks.bool()], lowres(images, 8)[~masks.bool()])
