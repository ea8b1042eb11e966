"""Every reader of user files, fed mutated copies of a small valid file (made from real data):
it returns a checked result or raises GatelabError, never anything else.

Mutations: bit flips, truncation, insertion, deletion, random overwrites, duplicated runs and
header edits. Deterministic (derandomize) and bounded; GATELAB_FUZZ_EXAMPLES=2000 for a long run.
"""

import tempfile
from pathlib import Path

import pytest
from fuzzlib import READERS, mutate
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.errors import GatelabError


@st.composite
def mutated(draw, base: bytes, header: int) -> bytes:
    return mutate(
        base,
        header,
        lambda lo, hi: draw(st.integers(lo, hi)),
        lambda k: draw(st.binary(min_size=k, max_size=k)),
    )


@pytest.mark.parametrize("name", list(READERS))
def test_valid_file_reads(name):
    r = READERS[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / r.filename
        path.write_bytes(r.post(r.make()))
        if name == "text-gz":  # a gzipped corpus is refused, by design
            with pytest.raises(GatelabError, match="gzip-compressed"):
                r.read(path)
        else:
            r.read(path)


def _fuzz(name):
    r = READERS[name]

    @settings.get_profile("gatelab-fuzz")
    @given(data=st.data())
    def run(data):
        content = r.post(data.draw(mutated(r.make(), r.header)))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / r.filename
            path.write_bytes(content)
            try:
                r.read(path)
            except GatelabError:
                pass

    return run


test_fuzz_idx_raw = _fuzz("idx-raw")
test_fuzz_idx_gz = _fuzz("idx-gz")
test_fuzz_idx_gz_inner = _fuzz("idx-gz-inner")
test_fuzz_png = _fuzz("png")
test_fuzz_jpeg = _fuzz("jpeg")
test_fuzz_text_corpus = _fuzz("text")
test_fuzz_text_corpus_gz = _fuzz("text-gz")
test_fuzz_brown_zip = _fuzz("brown-zip")
test_fuzz_w2v_text = _fuzz("w2v-text")
test_fuzz_w2v_binary = _fuzz("w2v-binary")
test_fuzz_w2v_binary_forced = _fuzz("w2v-binary-forced")
test_fuzz_lm_vocab = _fuzz("lm-vocab")
test_fuzz_training_checkpoint = _fuzz("training-checkpoint")
test_fuzz_skeleton_npz = _fuzz("skeleton-npz")
test_fuzz_skeleton_msr_text = _fuzz("skeleton-msr-text")
