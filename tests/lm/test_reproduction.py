"""The quick blackout-ptb reproduction runs end to end and writes a sensible report."""

import json

from gatelab.reproduce import available, run


def test_blackout_ptb_quick(ptb_available, tmp_path):
    assert "blackout-ptb" in available()
    folder = run("blackout-ptb", quick=True, out=tmp_path, seed=0, echo=None)
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "report.md").is_file() and (folder / "valid_ppl.png").is_file()
    runs, unigram = results["results"]["runs"], results["results"]["unigram_test_ppl"]
    assert set(runs) == {"softmax", "blackout", "nce"}
    # after the same short training, full softmax and BlackOut are both far below the unigram model
    assert runs["softmax"]["test_ppl"] < 0.9 * unigram
    assert runs["blackout"]["test_ppl"] < 0.9 * unigram
    assert "BlackOut / full softmax ppl" in (folder / "report.md").read_text()
