"""benchmarks/runtimes.py works: its timing rows count what they process and its table
divides by the right rows (no speed is asserted; figures live in docs/benchmarks.md)."""
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from landmark.models.runtime import TorchRuntime
from landmark.models import create_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "runtimes.py"
PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("runtimes_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rows_count_images_and_the_table_compares_like_with_like(bench, l13):
    torch.manual_seed(0)
    runtime = TorchRuntime(create_model("test_efficientnet", 3, weights="none"), ["a", "b", "c"], PREPROCESS,
                           device="cpu")
    fwd = bench.time_forward("eager", runtime, 4, 64, min_seconds=0.0)
    assert fwd.images == 12 and fwd.what == "forward" and fwd.rate > 0   # 3 timed calls of batch 4
    assert fwd.cpu_seconds > 0
    files = sorted((l13 / "test").rglob("*.jpg"))[:5]
    queries = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]})
    row, out = bench.time_predict("eager", runtime, queries, 4, 2, workers=0)
    assert row.images == 5 and row.inputs_per_image == 2 and out["landmark_id"].isin(["a", "b", "c"]).all()
    rows = [bench.Row("eager", "forward", 32, 100, 10.0, 1, 2.0), bench.Row("ort", "forward", 32, 100, 4.0, 1, 0.5),
            bench.Row("ort", "forward", 30, 90, 3.0, 1, 0.45),
            bench.Row("ort", "predict tta=10", 32, 10, 2.0, 10, 0.1),
            bench.Row("ort", "predict tta=1", 32, 64, 4.0, 1, 0.64)]
    table = bench.format_rows(rows).splitlines()
    assert table[3] == "| ort | forward | 32 | 100 | 25.0 | 40.0 | 5.0 | 2.50 | 4.00 | - | - |"
    # tta=10 at batch 32 sends 3 photos x 10 crops = 30 inputs per forward: compared with the batch-30 row
    # (30 inputs/s forward); 5 photos/s x 10 crops = 50 inputs/s: 167%; CPU: 5 ms per input forward,
    # 10 ms per photo / 10 crops = 1 ms per input end to end: 500%; no eager predict row to compare with
    assert table[5] == "| ort | predict tta=10 | 32 | 10 | 5.0 | 200.0 | 10.0 | n/a | n/a | 167% | 500% |"
    # tta=1: 16 images/s against 25/s forward at batch 32 = 64%; 10 CPU ms per photo against 5 = 50%
    assert table[6] == "| ort | predict tta=1 | 32 | 64 | 16.0 | 62.5 | 10.0 | n/a | n/a | 64% | 50% |"
    assert bench.forward_batch("predict tta=10", 32, 10) == 30 and bench.forward_batch("predict tta=1", 1, 1) == 1
    rows.append(bench.Row("ort", "predict all tta=1", 32, 100, 5.0, 1, 2.0))   # 20 ms of CPU per image
    estimate = bench.gldv2_estimate(rows, images=3_600_000).splitlines()
    assert estimate[2] == "| ort | 20.0 | 20 | 1.2 h | 0.3 h | 0.08 h |"   # 3.6M x 20 ms = 20 CPU-hours


def test_agreement_table_splits_landmark_and_other_photos(bench):
    ids = ["a", "b", "c", "d"]
    fp32 = pd.DataFrame({"id": ids, "landmark_id": ["1", "2", "3", "4"],
                         "verdict": ["One", "no landmark", "Three", "no landmark"]})
    # other order; d's label differs but both say "no landmark"; b's label is the same, its verdict not
    int8 = pd.DataFrame({"id": ids[::-1], "landmark_id": ["9", "3", "2", "1"],
                         "verdict": ["no landmark", "Three", "Two", "One"]})
    quality = {"ort-fp32": {"gap": 0.5, "accuracy": 0.6}, "ort-int8": {"gap": 0.52, "accuracy": 0.6}}
    table = bench.agreement_table(quality, {"ort-fp32": fp32, "ort-int8": int8}, {"a", "c"}).splitlines()
    assert table[2] == ("| ort-fp32 | 0.5000 | +0.0000 | 0.6000 | 1.0000 (4/4) | 1.0000 (2/2) | 1.0000 (2/2) | "
                        "1.0000 (4/4) |")
    assert table[3] == ("| ort-int8 | 0.5200 | +0.0200 | 0.6000 | 0.7500 (3/4) | 1.0000 (2/2) | 0.5000 (1/2) | "
                        "0.7500 (3/4) |")
