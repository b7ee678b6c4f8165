import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from landmark.memory import keep_freed_memory  # noqa: E402
from landmark.threads import spin_less  # noqa: E402

keep_freed_memory()   # as the `landmark` command does: eager PyTorch on the CPU stops re-faulting its activations
spin_less()           # as the `landmark` command does, before torch loads

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
L13 = DATA / "landmarks13"
DIRTY = DATA / "dirty"


MISSING_DATA = (f"WARNING: real data missing at {DATA}: every integration test on real photos will SKIP; "
                "put the shared data folder beside the checkout (../shared/data)")


def pytest_sessionstart(session) -> None:
    """Say once, loudly, at the start of the run (also under -q) when the real-data tests will skip."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not DATA.is_dir():
        reporter.write_line(MISSING_DATA, red=True, bold=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if not DATA.is_dir():
        terminalreporter.write_line(MISSING_DATA, red=True, bold=True)


@pytest.fixture(scope="session")
def l13() -> Path:
    if not L13.is_dir():
        pytest.skip(f"real data missing: {L13}")
    return L13


# --- a small recogniser shared by the recognizer / serving tests (built once per session) ---
KNOWN_LANDMARKS = ("9", "11")  # Machu Picchu, Petra: in the reference index
NEW_LANDMARK = "10"  # Palace of Versailles: enrolled by the tests
TOKEN = "s3cret-token"       # the enrolment token of the serving tests
PHOTO = "0003de5a85b027b5"   # a landmarks13 test photo the serving tests post


@pytest.fixture(scope="session")
def recognizer_run(l13, tmp_path_factory) -> Path:
    """A run folder as landmark train writes it (checkpoints/best.pt only): real ImageNet
    EfficientNet-Lite0 backbone, a seeded random 13-class head, landmarks13's names, 128 px."""
    import torch
    from landmark.data.gldv2 import landmark_names
    from landmark.models import create_model, save_checkpoint
    run = tmp_path_factory.mktemp("recognizer") / "run"
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 13, weights="imagenet")
    classes = [str(i) for i in range(13)]
    save_checkpoint(run / "checkpoints" / "best.pt", model, classes, names=landmark_names(l13, classes),
                    preprocess={"size": 128, "resize": 144, "mean": model.arch["mean"], "std": model.arch["std"]})
    return run


@pytest.fixture(scope="module")
def rec(recognizer_run):
    """The :func:`recognizer_run` loaded, one per test module (modules enrol into theirs);
    a module that defines its own ``rec`` uses that one."""
    from landmark import Recognizer
    return Recognizer.load(recognizer_run)


@pytest.fixture(scope="session")
def recognizer_index(l13, recognizer_run, tmp_path_factory) -> Path:
    """An index folder of 12 train photos each of :data:`KNOWN_LANDMARKS` (names stored)."""
    from landmark.data.gldv2 import landmark_names
    from landmark.retrieval.embeddings import labelled_images
    from landmark.retrieval.index import IndexParams
    from landmark.retrieval.pipeline import build_index, embed_checkpoint
    folder = tmp_path_factory.mktemp("index") / "idx"
    frame = labelled_images(l13, list(KNOWN_LANDMARKS)).groupby("landmark_id", observed=True).head(12)
    emb, _, info = embed_checkpoint(recognizer_run / "checkpoints" / "best.pt", frame,
                                    tmp_path_factory.mktemp("emb") / "ref.npy", workers=0)
    build_index(emb, folder, params=IndexParams(kind="flat"), model_info=info,
                names=landmark_names(l13, KNOWN_LANDMARKS))
    return folder


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) when the test blocks for 5 s, e.g. a reader on a FIFO."""
    import signal

    def timeout(*_):
        raise TimeoutError("blocked for 5 s")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module: tiny tensors gain nothing from two, and the CPUs may be shared."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

