"""Tests for the benchmark report (`benchmarks/bench.py`): the markdown it generates from results files.

The measurements themselves are not run here (they take minutes); these tests check that a results file turns into
the tables of the book's Results page, that chapter wall-time files are not mistaken for machine results, and that
the benchmark refuses smoke mode.
"""

import json

import pytest

from benchmarks import bench


def stats(mean, std=0.0, n=1):
    return {"mean": mean, "std": std, "n": n}


def fake_result():
    return {
        "machine": {"processor": "x86_64", "cpu_cores": 2, "torch": "2.x", "saae_lib": "0.1.0", "commit": "abc1234",
                    "device": "cpu"},
        "date": "2026-01-01",
        "speed": {"repeats": 3, "seconds_per_epoch_median": {"conventional_aae": 30.0, "aae_bf16": 10.0},
                  "aae_speedup_vs_conventional": 3.0, "aae_library_tflops": 0.3},
        "chapters": {"seconds": {"01_autoencoder": 120.0, "02_adversarial_autoencoder": 600.0}},
        "quality": {"semi_100": {"test_error": stats(0.05, 0.01, 3)},
                    "ae": {"test_reconstruction_mse": stats(0.0365), "prior_match_mmd": stats(0.4)},
                    "saae_conditional": {"generated_label_accuracy": stats(0.9997)}},
    }


def test_markdown_has_every_measured_figure():
    text = "\n".join(bench.markdown_for("cpu-2c", fake_result()))
    assert "## Measured on cpu-2c" in text
    assert "| AAE, conventional: torchvision `MNIST` + `DataLoader`, batch 100, fp32 | 30.00 |" in text
    assert "| AAE, saae_lib, bf16 | 10.00 |" in text
    assert "**3.0×** (target ≥ 3×); 300 GFLOP/s" in text
    assert "| **all four** | **12.0** |" in text  # 720 s
    assert "| semi-supervised error, 100 labels | 5.00 % ± 1.00 % (n=3) | ≤ 2.5 % (no seed > 3.5 %) | 1.90 % |" in text
    assert "read as k" not in text  # a number not measured gets no row
    assert "| AE test reconstruction MSE | 0.0365 (n=1) |" in text
    assert "| the same with a class-conditional discriminator D(z, y) | 99.97 % (n=1) | ≥ 99 % of ceiling | - |" in text
    assert "1000 labels" not in text  # runs that were not measured get no row


def test_the_books_tables_leave_out_our_targets():
    text = "\n".join(bench.markdown_for("cpu-2c", fake_result(), targets=False))
    assert "target" not in text
    assert "| semi-supervised error, 100 labels | 5.00 % ± 1.00 % (n=3) | 1.90 % |" in text
    assert "**3.0×**; 300 GFLOP/s" in text


def test_write_markdown_skips_chapter_time_files(tmp_path):
    (tmp_path / "cpu-2c.json").write_text(json.dumps(fake_result()))
    (tmp_path / "chapters-cpu-2c.json").write_text(json.dumps({"seconds": {"01_autoencoder": 1.0}}))
    out = bench.write_markdown(tmp_path)
    text = out.read_text()
    assert text.count("## Measured on") == 1
    assert "chapters-" not in text


def test_benchmark_refuses_smoke_mode(monkeypatch, capsys):
    monkeypatch.setenv("SAAE_FAST", "1")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", "speed"])
    assert exit_info.value.code == 2
    assert "unset SAAE_FAST" in capsys.readouterr().err


def test_seeds_measured_one_at_a_time_are_merged():
    stored = bench.summarized([0], [{"test_error": 0.05}])
    first = bench.merge_quality({"semi_100": stored}, {"semi_100": bench.summarized([1], [{"test_error": 0.03}])})
    merged = bench.merge_quality(first, {"semi_100": bench.summarized([2], [{"test_error": 0.04}])})["semi_100"]
    assert merged["seeds"] == [0, 1, 2]
    assert merged["test_error"]["mean"] == pytest.approx(0.04) and merged["test_error"]["n"] == 3
    assert (merged["test_error"]["min"], merged["test_error"]["max"]) == (0.03, 0.05)
    again = bench.merge_quality({"semi_100": merged}, {"semi_100": bench.summarized([1], [{"test_error": 0.06}])})
    assert again["semi_100"]["test_error"]["max"] == 0.06 and again["semi_100"]["test_error"]["n"] == 3
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": again}))
    assert "5.00 % ± 1.00 % [4.00 % to 6.00 %] (n=3)" in text
