"""bench/drin_bench.py --quick end to end: every figure finite, batched and per-mention scores equal, and the
network at the original's widths has the original's parameter count (DRIN.md: about 7.88M)."""
import importlib.util
import json
import math
import os
import shutil
import sys

import pytest

from mel.runs.lock import RunLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_report(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_drin", os.path.join(REPO, "bench", "drin_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "drin.json"
    result = bench.main(["--quick", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["parameters"] == 7_875_072  # 4 input layers + 2 x (W_h, LayerNorm, W_u, W_v) at d = 768
    for value in (result["train"]["samples_per_s"], result["score"]["batched_samples_per_s"],
                  result["score"]["one_per_forward_samples_per_s"]):
        assert math.isfinite(value) and value > 0
    assert result["score"]["max_abs_diff"] < 1e-4
    assert all(v > 0 for v in result["memory_mb"].values())


def test_linkers_table_summarises_each_seeds_run(drin_dataset, tmp_path):
    """bench/linkers.py runs main.py per (protocol, seed) and reports the mean and spread of what each run wrote."""
    spec = importlib.util.spec_from_file_location("bench_linkers", os.path.join(REPO, "bench", "linkers.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "linkers.json"
    rows = bench.main(["--methods", "retriever,drin", "--seeds", "0,1", "--out", str(out), "--", "--data_dir",
                       drin_dataset["data_dir"], "--dataset", "tiny", "--hidden", "16", "--train_epoch", "1",
                       "--batch_size", "4"])
    assert [(r["method"], r["protocol"]) for r in rows] == [("retriever", "leak_free"), ("drin", "leak_free"),
                                                            ("drin", "original")]
    assert rows[0]["seeds"] == [] and rows[0]["hits@1"]["std"] == 0 and len(rows[0]["hits@1"]["values"]) == 1
    for row in rows[1:]:
        hits = row["hits@1"]["values"]
        assert len(hits) == 2 and all(math.isclose(v * 3 / 100, round(v * 3 / 100)) for v in hits)  # of 3 mentions
        assert max(row["hits@5"]["values"]) <= 200 / 3 + 1e-9  # one test mention's gold is not listed
        assert math.isclose(row["hits@1"]["mean"], sum(hits) / 2)
        assert row["hits@5"]["mean"] >= row["hits@3"]["mean"] >= row["hits@1"]["mean"]
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))
    assert json.loads(out.read_text())["complete"] is True
    assert rows[0]["dev"]["seeds"] == [] and len(rows[0]["dev"]["hits@1"]["values"]) == 1
    for row in rows[1:]:  # the dev figures of the checkpoint each run tested
        assert row["dev"]["seeds"] == [0, 1] and all(0 <= v <= 100 for v in row["dev"]["hits@1"]["values"])
        assert all(0 < v <= 1 for v in row["dev"]["mrr"]["values"])
    dev_table = bench.markdown_dev(rows).splitlines()
    assert len(dev_table) == 4 and dev_table[3].startswith("| DRIN | ")  # the original protocol's row is left out
    assert f"| {rows[1]['dev']['hits@1']['mean']:.2f} ± " in dev_table[3]
    table = bench.markdown(rows).splitlines()
    assert len(table) == 5 and table[2].startswith("| retriever | leak_free | ") and "| – |" in table[2]
    assert table[3].startswith("| DRIN | leak_free | ")
    assert bench.merged(rows + rows) == rows  # a seed already there is the same run: not counted twice
    seed0, seed1 = json.loads(json.dumps(rows)), json.loads(json.dumps(rows))
    for one, i in ((seed0, 0), (seed1, 1)):
        for row in one[1:]:
            row["seeds"] = [i]
            for name in bench.SHOWN:
                row[name] = bench.spread([row[name]["values"][i]])
            row["dev"] = {"seeds": [i], **{name: bench.spread([row["dev"][name]["values"][i]])
                                          for name in bench.DEV_SHOWN}}
    assert bench.merged(seed0 + seed1) == rows  # seeds run apart join into the rows of one run
    assert [r["method"] for r in bench.merged(rows, ["drin", "retriever"])] == ["drin", "drin", "retriever"]


def test_linkers_keeps_the_seeds_finished_before_a_failure(tmp_path, monkeypatch):
    """A benchmark stopped midway leaves the finished seeds in --out, marked incomplete."""
    spec = importlib.util.spec_from_file_location("bench_linkers_stop", os.path.join(REPO, "bench", "linkers.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def ranker_summary(method, protocol, seed, flags, folder):
        if seed == 2:
            raise SystemExit("main.py failed")
        return {"hits@1": 50.0 + seed, "hits@3": 80.0, "hits@5": 90.0, "mrr": 0.6}

    monkeypatch.setattr(bench, "ranker_summary", ranker_summary)
    out = tmp_path / "linkers.json"
    keep = tmp_path / "runs"
    with pytest.raises(SystemExit, match="main.py failed"):
        bench.main(["--methods", "ghmfc", "--seeds", "0,1,2", "--out", str(out), "--keep", str(keep)])
    assert sorted(os.listdir(keep)) == ["ghmfc-seed0", "ghmfc-seed1", "ghmfc-seed2"]
    assert sorted(os.listdir(keep / "ghmfc-seed0")) == ["leak_free", "original"]
    saved = json.loads(out.read_text())
    assert saved["complete"] is False
    assert [(r["method"], r["protocol"], r["seeds"]) for r in saved["rows"]] == [
        ("ghmfc", "leak_free", [0, 1]), ("ghmfc", "original", [0, 1])]
    assert saved["rows"][0]["hits@1"]["values"] == [50.0, 51.0]
    with RunLock(keep / "ghmfc-seed0", "a kept folder", "wait"):  # another benchmark working in it now
        with pytest.raises(SystemExit, match="ghmfc-seed0.lock: this kept benchmark folder belongs to a live process"):
            bench.main(["--methods", "ghmfc", "--seeds", "0", "--out", str(tmp_path / "b.json"), "--keep", str(keep)])


def test_linkers_gemel_family_reports_test_and_dev(drin_dataset, tiny_dataset, tiny_opt_dir, tmp_path):
    """One GEMEL checkpoint gives the GEMEL, fused and fused_drin rows, each with its dev figures."""
    from tiny import tiny_run_flags

    spec = importlib.util.spec_from_file_location("bench_linkers_gemel", os.path.join(REPO, "bench", "linkers.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shutil.copytree(drin_dataset["folder"], tmp_path / "data" / "tiny")
    flags = tiny_run_flags(tiny_dataset, tiny_opt_dir, tmp_path, data_dir=str(tmp_path / "data"))
    rows = bench.main(["--methods", "gemel,fused,fused_drin", "--seeds", "0", "--out", str(tmp_path / "g.json"),
                       "--keep", str(tmp_path / "runs"), "--", *flags, "--train_epoch", "0"])
    assert [(r["method"], r["protocol"]) for r in rows] == [("gemel", "leak_free"), ("gemel", "original"),
                                                            ("fused", "leak_free"), ("drin", "leak_free"),
                                                            ("fused_drin", "leak_free")]
    kept = tmp_path / "runs" / "gemel+fused+fused_drin-seed0"
    for row in rows:
        assert row["seeds"] == [0]
        assert row["dev"]["seeds"] == [0] if row["protocol"] == "leak_free" else "dev" not in row
    gemel_dev = json.load(open(kept / "leak_free_dev.summary.json"))
    assert rows[0]["dev"]["hits@1"]["values"] == [gemel_dev["accuracy"]]
    fused = json.load(open(kept / "fused.summary.json"))
    assert rows[2]["dev"]["mrr"]["values"] == [fused["fusion_dev"]["mrr"]]
    assert rows[2]["hits@1"]["values"] == [fused["accuracy"]]
    steps = (kept / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 7  # GEMEL, its dev, test and gold-added test passes, the fused one, DRIN, fused with DRIN
    (kept / "fused_drin.summary.json").unlink()
    (kept / "steps.jsonl").write_text("\n".join(steps[:-1]) + "\n")  # as if stopped during the last step
    again = bench.main(["--methods", "gemel,fused,fused_drin", "--seeds", "0", "--out", str(tmp_path / "h.json"),
                        "--keep", str(tmp_path / "runs"), "--", *flags, "--train_epoch", "0"])
    assert again == rows and (kept / "steps.jsonl").read_text().splitlines() == steps  # only the last step ran
