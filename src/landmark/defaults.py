"""Defaults that a library function and the command line share: one home each.

The library's signatures use these names (``batch_size: int = BATCH_SIZE``) and so do the
typer options of ``landmark.cli`` (``typer.Option(BATCH_SIZE, ...)``), so a default is
changed in one place; tests/test_cli_keywords.py fails when the CLI writes a library
default as a literal.  Settings with a config model of their own live there instead
(``RetrievalConfig``, ``DownloadOptions``, ``ServeSettings``, ``ModelSpec``).

Lowest layer: imports nothing.
"""

#: images per forward pass (predict, embed, index build/add, knn, report)
BATCH_SIZE = 32
#: image-decoding workers of the retrieval steps and the report
WORKERS = 2
#: alternatives (and nearest reference photos) per answer: ``Recognizer.recognize``, ``landmark
#: recognize``, the service's ``POST /v1/recognize``
TOP_K = 3
#: test-time voting crops of ``predict`` and ``Recognizer.recognize`` (1 = none)
TTA = 1
#: crops of the report's voted prediction, compared with the single view
REPORT_TTA = 10
#: photos of the report's ImageNet top-3 and saliency sections
REPORT_SAMPLES = 6
#: photos compared between ONNX Runtime and PyTorch by ``export_onnx``
VERIFY_IMAGES = 32
#: photos calibrating int8 activations in ``export_onnx``
CALIBRATION_IMAGES = 64
#: storage type of embeddings written by ``embed``
EMBED_DTYPE = "float16"
#: classifier top-K classes stored beside embeddings (0: none)
TOP_CLASSES = 0
#: photos per forward pass of ``landmark tag`` (``landmark.inference.tagging.tag``)
TAG_BATCH = 16
#: images per atomically written part of a sharded or Ray ``embed``
PART_SIZE = 10_000
#: threads reading files for the dataset statistics report
STATS_WORKERS = 4
#: classes in each panel of the statistics report's class_frequency.png
STATS_TOP = 20
