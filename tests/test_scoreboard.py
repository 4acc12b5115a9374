"""The scoreboard: results recorded once, checked on every run after, and drawn as a table."""

import json
from pathlib import Path

import pytest

from sgdlab import scoreboard
from sgdlab.scoreboard import CLAIMS, CLAIMS_BY_KEY, ResultsChanged, load_results, record, scoreboard_rows, scoreboard_table

ROOT = Path(__file__).resolve().parents[1]
FLOOR = dict(rises=31, falls=40)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("SGDLAB_RESULTS", raising=False)
    return tmp_path


def test_a_gpu_result_is_written_the_first_time_and_checked_after(results):
    assert record("walk-floor-moves", "gpu", **FLOOR) is True
    stored = json.loads((results / "gpu.json").read_text())["claims"]["walk-floor-moves"]
    assert stored["values"] == FLOOR and stored["agrees"] is True and stored["recorded"]["date"]
    assert record("walk-floor-moves", "gpu", rises=32, falls=40)          # within 5%: the same result
    with pytest.raises(ResultsChanged, match=r"claim 'walk-floor-moves' \(gpu preset\).*'rises': 40.*SGDLAB_RESULTS=update"):
        record("walk-floor-moves", "gpu", rises=40, falls=40)


def test_a_changed_verdict_fails_even_when_the_numbers_are_close(results):
    record("walk-floor-moves", "paper", rises=1, falls=40)
    with pytest.raises(ResultsChanged, match="agrees: False"):
        record("walk-floor-moves", "paper", rises=0, falls=40)


def test_a_claim_missing_from_an_existing_quick_file_is_an_error_unless_asked(results, monkeypatch):
    record("walk-rare-barriers", "quick", largest_share=0.0, steps=405)   # no file yet (a fresh Colab session): written
    with pytest.raises(ResultsChanged, match="no stored quick result"):
        record("walk-floor-moves", "quick", **FLOOR)
    assert "walk-floor-moves" not in load_results("quick")
    monkeypatch.setenv("SGDLAB_RESULTS", "update")
    record("walk-floor-moves", "quick", **FLOOR)
    record("walk-floor-moves", "quick", rises=3, falls=4)                 # update: written over
    assert load_results("quick")["walk-floor-moves"]["values"] == dict(rises=3, falls=4)


def test_lists_numpy_and_torch_numbers_are_stored_as_plain_numbers(results):
    np, torch = pytest.importorskip("numpy"), pytest.importorskip("torch")
    record("batch-cosine", "gpu", batch_sizes=[10.0, 100.0], mean_cosine=[np.float64(-0.1), torch.tensor(-0.3)])
    assert load_results("gpu")["batch-cosine"]["values"] == dict(batch_sizes=[10.0, 100.0], mean_cosine=[-0.1, pytest.approx(-0.3)])


def test_bad_claims_and_values_are_refused_with_what_is_allowed(results):
    with pytest.raises(ValueError, match="key='walk' is not a claim of the scoreboard; choose one of: walk-rare-barriers"):
        record("walk", "gpu", **FLOOR)
    with pytest.raises(ValueError, match="claim 'walk-floor-moves' takes the values rises, falls; got falls"):
        record("walk-floor-moves", "gpu", falls=3)
    with pytest.raises(ValueError, match="rises=nan for claim 'walk-floor-moves' must be a finite number"):
        record("walk-floor-moves", "gpu", rises=float("nan"), falls=3)
    with pytest.raises(ValueError, match="preset='colab' is not known; choose one of: quick, gpu, paper"):
        record("walk-floor-moves", "colab", **FLOOR)
    (results / "gpu.json").write_text("{not json")
    with pytest.raises(ValueError, match="gpu.json is not a results file"):
        load_results("gpu")


def test_the_table_has_a_row_per_claim_and_says_what_is_missing(results):
    record("walk-floor-moves", "gpu", rises=0, falls=3)
    rows = scoreboard_rows()
    assert [r["key"] for r in rows] == [c.key for c in CLAIMS]
    floor = rows[[c.key for c in CLAIMS].index("walk-floor-moves")]
    assert floor["quick"] is None and floor["gpu"]["agrees"] is False and floor["claim"] == CLAIMS_BY_KEY["walk-floor-moves"].paper
    table = scoreboard_table().data
    shown = CLAIMS_BY_KEY["walk-floor-moves"].show(dict(rises=0, falls=3))
    assert table.count("\n") == len(CLAIMS) + 1 and f"✗ differs: {shown}" in table
    assert all(line.replace("\\|", "").count("|") == 6 for line in table.splitlines()[2:])  # no stray | inside a cell
    assert any("\\|" in line for line in table.splitlines()[2:])  # the claims hold | (norms): escaped, not dropped


def test_the_repository_holds_a_quick_result_for_every_claim_each_in_its_chapter(monkeypatch):
    monkeypatch.delenv("SGDLAB_RESULTS_DIR", raising=False)
    assert scoreboard.results_dir() == ROOT / "results"
    stored = load_results("quick")
    assert list(stored) == [c.key for c in CLAIMS]
    for claim in CLAIMS:   # the chapter that measures a claim records it (and so checks it on every run)
        assert f'record("{claim.key}"' in (ROOT / "book" / f"{claim.chapter}.ipynb").read_text().replace('\\"', '"')
