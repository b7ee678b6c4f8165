"""An ONNX file's ``landmark`` metadata is read like any file from someone else: JSON nested
past the parser's depth, classes that are not distinct strings or disagree with the graph's
``logits`` width, and ``names`` / ``arch`` that are not objects are refused in one line when
the model loads (before: a RecursionError traceback, a reshape traceback on every photo, or
class ids such as ``{'a': 1}`` printed as answers)."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from landmark.models.runtime import OnnxRuntime  # noqa: E402

PRE = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.5] * 3}
GOOD = {"classes": [str(i) for i in range(5)], "preprocess": PRE, "names": {"0": "A"}}


def export(tmp_path, meta: str, logits: int = 5):
    """A tiny graph with landmark export's inputs and outputs (mean-pooled RGB -> linear logits)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, logits)).astype(np.float32), "W")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["embedding"]),
             helper.make_node("MatMul", ["embedding", "W"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", logits]),
                               helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "landmark", meta
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_a_good_export_loads_and_answers(tmp_path):
    runtime = OnnxRuntime(export(tmp_path, json.dumps(GOOD)), threads=1)
    logits, emb = runtime(np.zeros((2, 3, 32, 32), np.float32))
    assert runtime.classes == GOOD["classes"] and tuple(logits.shape) == (2, 5) and tuple(emb.shape) == (2, 3)


@pytest.mark.parametrize("meta, words", [
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ('{"classes": ["0"], "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not JSON"),
    (json.dumps(dict(GOOD, classes=[{"a": i} for i in range(5)])), "not strings"),
    (json.dumps(dict(GOOD, classes=["0", "1"])), "2 classes for a graph of 5 logits"),
    (json.dumps(dict(GOOD, classes=[str(i) for i in range(500)])), "500 classes for a graph of 5 logits"),
    (json.dumps(dict(GOOD, classes=[])), "0 classes"),
    (json.dumps(dict(GOOD, classes=["0"] * 5)), "repeated classes"),
    (json.dumps(dict(GOOD, names=["x"])), "'names' that is not an object"),
    (json.dumps(dict(GOOD, arch="abc")), "'arch' that is not an object"),
])
def test_hostile_metadata_is_refused_in_one_line_when_the_model_loads(tmp_path, meta, words):
    path = export(tmp_path, meta)
    with pytest.raises(ValueError, match=words) as err:
        OnnxRuntime(path, threads=1)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_preprocessing_size_the_graph_does_not_take_is_refused(tmp_path):
    """The graph takes 32 x 32 px; metadata saying 40 px was loaded and then failed on every photo
    with ONNX Runtime's INVALID_ARGUMENT traceback."""
    from landmark.models.onnx_model import OnnxModel
    meta = json.dumps(dict(GOOD, preprocess=dict(PRE, size=40, resize=48)))
    with pytest.raises(ValueError, match="resizes photos to 40 px, its graph takes 32 x 32 px; export it again"):
        OnnxModel(export(tmp_path, meta))
    assert OnnxModel(export(tmp_path, json.dumps(GOOD))).preprocess.size == 32
