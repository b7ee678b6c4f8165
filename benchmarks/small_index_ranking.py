"""The product ranking on small indexes: each direction's index of benchmarks/retrieval_quality.py cut
to n photos per landmark (3, 6, 12, 25, all), ranked by cosine, alpha-QE 5, QE 5 + DBA 5 and the
default (QE 5 + DBA 5 + diffusion k 30 alpha 0.95, diffusion_min_photos 0 so that it always runs);
prints mAP@100 per row (docs/retrieval.md, "Small indexes").

    PYTHONPATH=src python benchmarks/small_index_ranking.py runs/retrieval ar448
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_quality import K, directions, solution_of, stack  # noqa: E402

from landmark.evaluation.retrieval_metrics import mean_average_precision  # noqa: E402
from landmark.retrieval.config import IndexParams, RetrieveConfig  # noqa: E402
from landmark.retrieval.embeddings import Embeddings  # noqa: E402
from landmark.retrieval.index import LandmarkIndex  # noqa: E402
from landmark.retrieval.pipeline import rank_index  # noqa: E402

work, tag = Path(sys.argv[1]), sys.argv[2]
configs = {"cosine": RetrieveConfig(qe=0, dba=0, diffusion=0), "qe5": RetrieveConfig(dba=0, diffusion=0),
           "qe5+dba5": RetrieveConfig(diffusion=0), "default": RetrieveConfig(diffusion_min_photos=0)}
print("| direction | photos per landmark | index photos | cosine | qe 5 | qe 5 + dba 5 | + diffusion |")
print("|---|---|---|---|---|---|---|")
for direction, (queries, items, _) in directions(work, tag).items():
    for per in (3, 6, 12, 25, 1000):
        keep = items.sample(frac=1.0, random_state=0).groupby("landmark_id").head(per).reset_index(drop=True)
        index = LandmarkIndex.build(Embeddings(items=keep[["id", "landmark_id", "path"]], vectors=stack(keep)),
                                    IndexParams(kind="flat"))
        truth = solution_of(queries, keep)
        row = [direction, per, len(keep)]
        for name, cfg in configs.items():
            _, rows = rank_index(index, stack(queries), cfg)
            ids = keep["id"].to_numpy()
            ranked = {q: list(ids[r[r >= 0]]) for q, r in zip(queries["id"], rows) if q in truth}
            row.append(round(mean_average_precision(ranked, truth, K), 3))
        print("|", " | ".join(map(str, row)), "|", flush=True)
