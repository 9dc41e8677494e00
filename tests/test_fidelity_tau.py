"""benchmarks/fidelity_tau.py at a tiny size: its Kendall tau, its JSONL, and that it resumes."""

import json

import pytest
from scipy.stats import kendalltau
from support.scripts import load_counting


@pytest.fixture
def bench(monkeypatch):
    return load_counting("fidelity_tau", monkeypatch)


@pytest.mark.slow
def test_tiny_run_reports_kendall_tau_of_its_results_and_resumes(bench, tmp_path, capsys):
    results = tmp_path / "tau.jsonl"
    base = ["--space", "digits_quick", "--short-epochs", "1", "--long-epochs", "1", "--long-subset", "400",
            "--threads", "1", "--results", str(results)]
    summary = bench.main([*base, "--archs", "3"])
    assert summary["n"] == 3 and summary["trained"] == 6 and "missing" not in summary
    short = [c for c in bench.calls if c[2] != 400]
    assert len(short) == 3 and len(bench.calls) == 6 and {c[1] for c in bench.calls} == {1}
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["phase"], r["arch"]) for r in lines] == [("short", 0), ("short", 1), ("short", 2),
                                                        ("long", 0), ("long", 1), ("long", 2)]
    assert all(r["train_images"] == 400 and r["scored_on"] == 359 for r in lines if r["phase"] == "long")  # digits test split
    by = {(r["phase"], r["arch"]): r["score"] for r in lines}
    expected = kendalltau([by["short", i] for i in range(3)], [by["long", i] for i in range(3)]).statistic
    # NaN when one side is constant (possible after one epoch): then the summary must say NaN too.
    assert summary["kendall_tau"] == pytest.approx(expected, nan_ok=True)
    assert not list((tmp_path / "tau.jsonl.ckpt").glob("*.pt"))  # checkpoints of finished runs are removed

    bench.calls.clear()
    again = bench.main([*base, "--archs", "3"])
    assert bench.calls == [] and again["trained"] == 0 and again["n"] == 3

    # More configurations continue the same seeded sequence: only the new one trains, and only its short run.
    more = bench.main([*base, "--archs", "4", "--phase", "short"])
    assert more["trained"] == 1 and len(bench.calls) == 1 and more["n"] == 3 and more["missing"] == 1
    assert [json.loads(line) for line in results.read_text().splitlines()][:6] == lines
    assert "kendall_tau" in capsys.readouterr().out

    # Another short fidelity (fewer images) is measured against the same long runs: none retrains.
    bench.calls.clear()
    other = bench.main([*base, "--archs", "3", "--short-subset", "300"])
    assert other["trained"] == 3 and other["n"] == 3 and other["short_train_images"] == 300
    assert [c[2] for c in bench.calls] == [300, 300, 300]


def test_a_results_file_from_another_sequence_is_refused(bench, tmp_path):
    results = tmp_path / "tau.jsonl"
    args = ["--space", "digits_quick", "--archs", "1", "--short-epochs", "1", "--phase", "short", "--threads", "1",
            "--results", str(results)]
    bench.main(args)
    rec = json.loads(results.read_text())
    rec["params"]["lr"] = 123.0
    results.write_text(json.dumps(rec) + "\n")
    with pytest.raises(SystemExit, match="differs from the one sampled now"):
        bench.main(args)
