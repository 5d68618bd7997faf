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


def measured(name, recipe, key, values, **extra):
    """A stored quality entry of `values` (one per seed) of a run trained with today's `recipe`."""
    config = bench.recipe_config(name, recipe)
    records = [{key: v, "epochs": config["epochs"], "config": config, "measures_version": bench.MEASURES_VERSION,
                **extra} for v in values]
    return bench.summarized(list(range(len(values))), records)


def fake_result():
    return {
        "machine": {"processor": "x86_64", "cpu_cores": 2, "torch": "2.x", "saae_lib": "0.1.0", "commit": "abc1234",
                    "device": "cpu"},
        "date": "2026-01-01",
        "speed": {"repeats": 3, "seconds_per_epoch_median": {"conventional_aae": 30.0, "aae_bf16": 10.0},
                  "aae_speedup_vs_conventional": 3.0, "aae_library_tflops": 0.3},
        "chapters": {"seconds": {"01_autoencoder": 120.0, "02_adversarial_autoencoder": 600.0}},
        "quality": {"semi_100_quick": measured("semi_100", "quick", "test_error", [0.04, 0.05, 0.06]),
                    "ae": measured("ae", "full", "test_reconstruction_mse", [0.0365], prior_match_mmd=0.4),
                    "saae_conditional": measured("saae_conditional", "full", "generated_label_accuracy", [0.9997])},
    }


def test_markdown_has_every_measured_figure():
    text = "\n".join(bench.markdown_for("cpu-2c", fake_result()))
    assert "## Measured on cpu-2c" in text
    assert "| AAE, conventional: torchvision `MNIST` + `DataLoader`, batch 100, fp32 | 30.00 |" in text
    assert "| AAE, saae_lib, bf16 | 10.00 |" in text
    assert "**3.0×** (target ≥ 3×); 300 GFLOP/s" in text
    assert "| **all 2** | **12.0** |" in text  # 720 s, the two chapters of the record
    assert ("| semi-supervised error, 100 labels | 5.00 % ± 1.00 % [4.00 % to 6.00 %] (n=3) | ≤ 3.0 % | - | "
            "≤ 1.90 % (aim ≤ 1.5 %) | 1.90 % |") in text
    assert "read as k" not in text  # a number not measured gets no row
    assert "| AE test reconstruction MSE | the full recipe | - | 0.0365 (n=1) | - | - |" in text
    assert ("| the same with a class-conditional discriminator D(z, y) | the full recipe | - | 99.97 % (n=1) | "
            "≥ 99 % of ceiling | - |") in text
    assert "error, 1000 labels" not in text  # runs that were not measured get no row


def test_the_books_tables_leave_out_our_targets():
    text = "\n".join(bench.markdown_for("cpu-2c", fake_result(), targets=False))
    assert "target" not in text
    assert "| semi-supervised error, 100 labels | 5.00 % ± 1.00 % [4.00 % to 6.00 %] (n=3) | - | 1.90 % |" in text
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


def today(value, name="semi_100", recipe="full"):
    config = bench.recipe_config(name, recipe)
    return {"test_error": value, "epochs": config["epochs"], "config": config}


def test_seeds_measured_one_at_a_time_are_merged():
    stored = bench.summarized([0], [today(0.05)])
    first = bench.merge_quality({"semi_100": stored}, {"semi_100": bench.summarized([1], [today(0.03)])})
    merged = bench.merge_quality(first, {"semi_100": bench.summarized([2], [today(0.04)])})["semi_100"]
    assert merged["seeds"] == [0, 1, 2]
    assert merged["test_error"]["mean"] == pytest.approx(0.04) and merged["test_error"]["n"] == 3
    assert (merged["test_error"]["min"], merged["test_error"]["max"]) == (0.03, 0.05)
    again = bench.merge_quality({"semi_100": merged}, {"semi_100": bench.summarized([1], [today(0.06)])})
    assert again["semi_100"]["test_error"]["max"] == 0.06 and again["semi_100"]["test_error"]["n"] == 3
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": again}))
    assert "5.00 % ± 1.00 % [4.00 % to 6.00 %] (n=3)" in text


def test_results_of_settings_no_recipe_has_are_not_shown_but_named():
    old = {"test_error": 0.05, "epochs": 20}  # the second edition's 20-epoch semi model, stored without its config
    quality = {"semi_100": bench.summarized([0], [old]),
               "semi_100_quick": bench.summarized([0], [today(0.03, recipe="quick")])}
    quality = json.loads(json.dumps(quality))  # as stored (tuples become lists)
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": quality}, targets=False))
    assert "| semi-supervised error, 100 labels | 3.00 % (n=1) | - | 1.90 % |" in text
    assert "5.00 %" not in text and "semi_100 (20 epochs)" in text


def test_a_run_with_stale_and_current_seeds_names_only_the_stale_ones_epochs():
    """A full-recipe seed measured beside two old 20-epoch seeds: the table shows the one, the note names the 20."""
    old = {"test_error": 0.05, "epochs": 20}
    quality = json.loads(json.dumps({"semi_100": bench.summarized([0, 1], [today(0.0227), old])}))
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": quality}, targets=False))
    assert "| semi-supervised error, 100 labels | - | 2.27 % (n=1) | 1.90 % |" in text
    assert "semi_100 (20 epochs)" in text and "150" not in text.split("Not shown: stored")[1].splitlines()[0]


def test_prior_matches_of_the_old_first_2000_measure_are_not_shown():
    record = {**today(None, "aae_gaussian"), "test_reconstruction_mse": 0.04, "prior_match_mmd": 0.046}
    del record["test_error"]
    old = bench.summarized([0], [record])
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": {"aae_gaussian": old}}))
    assert "0.0460" not in text and "first 2000 images" in text and "aae_gaussian" in text
    new = bench.summarized([0], [{**record, "measures_version": bench.MEASURES_VERSION}])
    text = "\n".join(bench.markdown_for("cpu-2c", {**fake_result(), "quality": {"aae_gaussian": new}}))
    assert "| AAE prior match (MMD to N(0, I), the same) | the full recipe | - | 0.0460 (n=1) | ≤ 0.01 | - |" in text


def test_a_quality_only_run_keeps_the_speed_measurements_machine_line(tmp_path, monkeypatch):
    stored = {**fake_result(), "quality": {}}
    (tmp_path / "cpu-2c.json").write_text(json.dumps(stored))
    monkeypatch.setattr(bench, "bench_quality", lambda *args: {"ae": measured("ae", "full", "test_reconstruction_mse",
                                                                              [0.0366])})
    bench.main(["--only", "quality", "--label", "cpu-2c", "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "cpu-2c.json").read_text())
    assert result["machine"] == stored["machine"] and result["date"] == stored["date"]
    assert "quality_date" in result


def test_each_run_has_a_quick_recipe_only_where_it_differs():
    assert bench.own_recipe("semi_100", "quick") and bench.own_recipe("cluster_16", "quick")
    assert not bench.own_recipe("ae", "quick") and not bench.own_recipe("cluster_30", "quick")
    assert [bench.run_name("semi_100", r, s) for r, s in [("full", 0), ("quick", 0), ("quick", 2)]] == [
        "semi_100", "semi_100_quick", "semi_100_quick_seed2"]
    assert bench.recipe_config("semi_100", "quick")["epochs"] < bench.recipe_config("semi_100", "full")["epochs"]


def test_a_chapter_run_at_another_commit_says_so():
    result = fake_result()
    result["chapters"] |= {"commit": "bbbbbbb", "commits": {"01_autoencoder": "aaaaaaa",
                                                            "02_adversarial_autoencoder": "bbbbbbb"}}
    text = "\n".join(bench.markdown_for("cpu-2c", result))
    assert "| chapter, full run (commit bbbbbbb) | minutes |" in text
    assert "| 01_autoencoder (commit aaaaaaa) | 2.0 |" in text
    assert "| 02_adversarial_autoencoder | 10.0 |" in text


def test_chapter_4s_table_is_the_records_and_names_their_machine(tmp_path):
    """Each cell comes from the machine with the most seeds of that recipe; a model with one recipe says so; a
    recipe nobody measured says so; the old 20-epoch seeds are left out."""
    (tmp_path / "cpu-2c.json").write_text(json.dumps({"quality": {
        "semi_100": measured("semi_100", "full", "test_error", [0.03]),
        "supervised_100": measured("supervised_100", "full", "test_error", [0.25, 0.27])}}))
    (tmp_path / "cpu-2c-bf16.json").write_text(json.dumps({"quality": {
        "semi_100": measured("semi_100", "full", "test_error", [0.02, 0.04]),
        "semi_1000": bench.summarized([0], [{"test_error": 0.05, "epochs": 20}])}}))
    (tmp_path / "chapters-cpu-2c.json").write_text(json.dumps({"seconds": {}}))  # chapter times: not a machine
    rows = {" | ".join(line.split(" | ")[:2]): line for line in bench.chapter4_table(tmp_path)[2:]}
    assert "| 3.00 % ± 1.41 % (n=2, 2-core CPU with bf16 units) | 1.90 % |" in rows["| semi-supervised AAE | 100"]
    assert "| not measured yet |" in rows["| semi-supervised AAE | 100"]  # its quick recipe
    baseline = rows["| the same network on the labelled images alone | 100"]
    assert "| one recipe: as the full | 26.00 % ± 1.41 % (n=2, 2-core CPU, fp32) | - |" in baseline
    assert "5.00 %" not in rows["| semi-supervised AAE | 1000"]


def test_chapter_4s_table_is_written_between_its_markers_and_checked(tmp_path):
    nbformat = pytest.importorskip("nbformat")  # the notebook tools: not in the dependency floors' environment

    notebook = tmp_path / "04.ipynb"
    text = f"Before.\n\n{bench.CHAPTER_4_MARKERS[0]}\n| typed in |\n{bench.CHAPTER_4_MARKERS[1]}\n\nAfter."
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)]), notebook)
    (tmp_path / "cpu-2c.json").write_text(json.dumps({"quality": {
        "semi_100": measured("semi_100", "full", "test_error", [0.03])}}))
    assert not bench.write_chapter4(tmp_path, notebook, check=True)  # stale, and check leaves it so
    assert "| typed in |" in notebook.read_text()
    assert not bench.write_chapter4(tmp_path, notebook)  # rewritten
    source = nbformat.read(notebook, as_version=4).cells[0].source
    assert source.startswith("Before.") and source.endswith("After.") and "| typed in |" not in source
    assert "3.00 % (n=1, 2-core CPU, fp32)" in source
    assert bench.write_chapter4(tmp_path, notebook, check=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no markers")]), notebook)
    with pytest.raises(ValueError, match="no markdown cell holds"):
        bench.write_chapter4(tmp_path, notebook)


def test_chapter_4_shows_the_current_records():
    pytest.importorskip("nbformat")
    assert bench.write_chapter4(check=True), "chapter 4's table is stale: run python -m benchmarks.bench --table"
