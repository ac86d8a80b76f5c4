"""bench/drin_bench.py --quick end to end: every figure finite, batched and per-mention scores equal, and the
network at the original's widths has the original's parameter count (DRIN.md: about 7.88M)."""
import importlib.util
import json
import math
import os
import sys

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
