"""Every index kind `index build` can make loads back (ivfsq, auto's choice from 2M photos, was
refused on load: 'meta.json says kind ivfsq, index.faiss holds a IndexIVFScalarQuantizer'), with
and without a stored whitening, and answers as before saving."""
import numpy as np
import pandas as pd
import pytest

from landmark.retrieval.config import IndexParams
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import LandmarkIndex


@pytest.mark.parametrize("whiten", [0, 16])
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfsq", "ivfpq"])
def test_every_kind_reloads_and_answers_alike(tmp_path, kind, whiten):
    x = np.random.default_rng(0).random((400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb = Embeddings(x, pd.DataFrame({"id": [str(i) for i in range(400)], "landmark_id": ["1"] * 400}))
    index = LandmarkIndex.build(emb, IndexParams(kind=kind, nlist=4, pq_m=8, whiten=whiten))
    index.save(tmp_path / "idx")
    again = LandmarkIndex.load(tmp_path / "idx")
    assert again.kind == kind and len(again) == 400 and again.dim == 32
    assert np.array_equal(again.search(x[:5], 4)[1], index.search(x[:5], 4)[1])
