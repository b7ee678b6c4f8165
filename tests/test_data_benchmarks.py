"""The synthetic GLDv2 of benchmarks/gldv2_scale.py has the promised shape."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

from landmark.data import read_train

SCALE = Path(__file__).resolve().parents[1] / "benchmarks" / "gldv2_scale.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gldv2_scale_benchmark", SCALE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_class_sizes_match_gldv2_totals():
    bench = load_benchmark()
    sizes = bench.class_sizes(203_094, 4_132_914, 10_247)
    assert len(sizes) == 203_094 and sizes.sum() == 4_132_914
    assert sizes.max() == 10_247 and (sizes == 10_247).sum() == 1 and sizes.min() == 1
    assert (sizes == 1).sum() > 20_000                        # a long tail of singletons


def test_small_synthetic_csv_reads_back(tmp_path):
    bench = load_benchmark()
    shape = bench.write_train_csv(tmp_path / "train.csv", 0.001)
    frame = read_train(tmp_path)
    assert len(frame) == shape["rows"] == 4132
    counts = frame["landmark_id"].value_counts()
    assert counts.max() == shape["max"] and int((counts == 1).sum()) == shape["singletons"]
    assert frame["id"].str.fullmatch(r"[0-9a-f]{16}").all() and not frame["id"].duplicated().any()
    assert np.isin(counts.index.astype(int), np.arange(shape["classes"])).all()
