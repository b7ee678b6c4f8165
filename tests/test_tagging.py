"""landmark tag on real photos: XMP sidecars read back by exiv2 and by exiftool, other tags of an
existing sidecar kept, a second run skips, a stopped run resumes, originals untouched."""
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _helpers import answered
from conftest import DATA
from landmark.data import image_path

exiv2 = pytest.importorskip("exiv2", reason="exiv2 not installed: pip install 'landmark[tag]'")

from landmark.inference import tagging  # noqa: E402
from landmark.inference.tagging import read_xmp, sidecar_path  # noqa: E402

PHOTOS = ["0293bfc9c30f70fe", "03ebea6fd7624da2", "0691d80cdbb46d03"]   # landmarks13 test photos
NONLANDMARK = DATA / "nonlandmarks" / "images"

# A sidecar as digiKam/darktable leave one: keywords, a rating, a darktable history (structs) and
# a namespace nobody registered.
EXISTING = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:darktable="http://darktable.sf.net/"
    xmlns:mine="http://example.org/mine/1.0/"
    xmp:Rating="4" mine:album="Summer 2019">
   <dc:subject><rdf:Bag><rdf:li>Holiday</rdf:li><rdf:li>Rome</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|Rome</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history><rdf:Seq>
     <rdf:li darktable:operation="exposure" darktable:enabled="1"/>
   </rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def library(l13, tmp_path):
    """A small photo library: 3 landmark photos in two folders, a photo without a landmark,
    a note, a broken "photo"; copies, so that sidecars are written beside them."""
    root = tmp_path / "Pictures"
    (root / "2019" / "rome").mkdir(parents=True)
    (root / "misc").mkdir()
    for k, i in enumerate(PHOTOS):
        shutil.copy(image_path(l13, i, "test"), root / ("2019/rome" if k else "misc") / f"{i}.jpg")
    shutil.copy(NONLANDMARK / "2/a/a/2aadb4261ffa716a.jpg", root / "misc" / "basket.jpg")   # a shopping basket
    (root / "misc" / "notes.txt").write_text("not a photo")
    (root / "misc" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def _photos(root):
    return sorted(p for p in root.rglob("*.jpg") if p.name != "broken.jpg")


def test_sidecars_read_back_by_the_library(rec, recognizer_run, library):
    from landmark.models.runtime import file_sha256
    before = {p: _sha(p) for p in _photos(library)}
    summary = tagging.tag_photos(rec, [library], "model-a", progress=False)
    assert (summary.tagged + summary.no_landmark, summary.skipped) == (4, 0)
    assert summary.not_photos == {".txt": 1}
    assert [(p.rsplit("/", 1)[-1], "unidentified" in why) for p, why in summary.unreadable] == [("broken.jpg", True)]
    assert not sidecar_path(library / "misc" / "broken.jpg").exists()
    for photo in _photos(library):
        answer, = rec.recognize(photo)
        xmp = read_xmp(sidecar_path(photo))
        assert xmp["Xmp.landmark.model"] == ["model-a"]
        # the answer's id as landmarkId when it is a landmark, else only as the best guess (no name beside
        # "Verdict: no landmark": a library reading the product's fields would show it as the photo's landmark)
        own, other = ("landmarkId", "bestGuessId") if answer.is_landmark else ("bestGuessId", "landmarkId")
        assert xmp[f"Xmp.landmark.{own}"] == [answer.landmark_id] and f"Xmp.landmark.{other}" not in xmp
        assert ("Xmp.landmark.name" in xmp) == answer.is_landmark != ("Xmp.landmark.bestGuess" in xmp)
        assert xmp["Xmp.landmark.verdict"] == [answer.verdict]
        assert xmp["Xmp.landmark.certainty"] == [answer.certainty]
        assert float(xmp["Xmp.landmark.score"][0]) == pytest.approx(answer.score, abs=1e-4)
        if answer.is_landmark:
            assert xmp["Xmp.dc.subject"] == [answer.name]
            assert xmp["Xmp.lr.hierarchicalSubject"] == [f"Landmarks|{answer.name}"]
        else:   # no landmark: the product's fields only, no keyword
            assert "Xmp.dc.subject" not in xmp and "Xmp.lr.hierarchicalSubject" not in xmp
        assert _sha(photo) == before[photo]   # the photo itself is untouched
    assert file_sha256(recognizer_run / "checkpoints" / "best.pt") == tagging.model_identity(recognizer_run)
    # predict / knn / embed on the tagged library: its sidecars are not photos (they were listed as unreadable)
    from landmark.data import read_queries
    listed = read_queries(library)["path"].tolist()
    assert not [p for p in listed if p.endswith(".xmp")] and len(listed) == 5, listed   # 4 photos + broken.jpg


def test_exiftool_reads_the_keywords(rec, library):
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool missing: apt-get install libimage-exiftool-perl (make test installs it)")
    rec.threshold, old = 0.0, rec.threshold   # every photo a landmark: every sidecar has keywords
    try:
        tagging.tag_photos(rec, [library], "model-a", progress=False)
    finally:
        rec.threshold = old
    photo = library / "misc" / f"{PHOTOS[0]}.jpg"
    answer, = rec.recognize(photo)
    done = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
                           "-XMP-landmark:all", str(sidecar_path(photo))], capture_output=True, text=True, check=True)
    found, = json.loads(done.stdout)
    subject = found["Subject"] if isinstance(found["Subject"], list) else [found["Subject"]]
    hier = found["HierarchicalSubject"]
    assert subject == [answer.name] and answer.name in {"Angkor Wat", "Petra", "Machu Picchu"} | set(rec.names.values())
    assert (hier if isinstance(hier, list) else [hier]) == [f"Landmarks|{answer.name}"]
    assert found["Model"] == "model-a" and found["Verdict"] == answer.name


def test_exiftool_shows_no_name_beside_no_landmark(rec, library):
    """A photo of no landmark: what exiftool shows of its sidecar has no keyword and no name, only
    the best guess in fields named so (the guess was landmark:name, 'Name: Petra' beside 'Verdict: no
    landmark', before 2026-12-07); a later answer naming a landmark drops the guess."""
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool missing: apt-get install libimage-exiftool-perl (make test installs it)")
    photo = library / "misc" / f"{PHOTOS[0]}.jpg"
    rec.threshold, old = 1.0, rec.threshold   # nothing reaches it: every photo is no landmark
    try:
        tagging.tag_photos(rec, [photo], "model-a", progress=False)
    finally:
        rec.threshold = old
    answer, = rec.recognize(photo)

    def shown() -> dict:
        done = subprocess.run(["exiftool", "-j", "-a", "-G1", "-XMP:all", str(sidecar_path(photo))],
                              capture_output=True, text=True, check=True)
        return {k: v for k, v in json.loads(done.stdout)[0].items() if k.startswith("XMP")}
    found = shown()
    assert found["XMP-landmark:Verdict"] == "no landmark"
    assert found["XMP-landmark:BestGuess"] == answer.name and found["XMP-landmark:BestGuessId"] == \
        int(answer.landmark_id)
    assert not any(answer.name == v or answer.name in (v if isinstance(v, list) else [])
                   for k, v in found.items() if k != "XMP-landmark:BestGuess"), found
    assert {"XMP-landmark:Name", "XMP-landmark:LandmarkId", "XMP-dc:Subject"}.isdisjoint(found), found
    rec.threshold, old = 0.0, rec.threshold   # now a landmark: named, the guess gone
    try:
        tagging.tag_photos(rec, [photo], "model-b", progress=False)
    finally:
        rec.threshold = old
    found = shown()
    assert found["XMP-landmark:Name"] == answer.name and found["XMP-dc:Subject"] in (answer.name, [answer.name])
    assert {"XMP-landmark:BestGuess", "XMP-landmark:BestGuessId"}.isdisjoint(found), found


def test_existing_sidecar_keeps_its_tags(rec, library):
    photo = library / "2019" / "rome" / f"{PHOTOS[1]}.jpg"
    sidecar_path(photo).write_text(EXISTING, encoding="utf-8")
    rec.threshold, old = 0.0, rec.threshold
    try:
        tagging.tag_photos(rec, [photo], "model-a", progress=False)
    finally:
        rec.threshold = old
    answer, = rec.recognize(photo)
    xmp = read_xmp(sidecar_path(photo))
    assert xmp["Xmp.dc.subject"] == ["Holiday", "Rome", answer.name]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["Places|Rome", f"Landmarks|{answer.name}"]
    assert xmp["Xmp.xmp.Rating"] == ["4"] and xmp["Xmp.mine.album"] == ["Summer 2019"]
    assert xmp["Xmp.darktable.history[1]/darktable:operation"] == ["exposure"]
    if shutil.which("exiftool"):
        out = subprocess.run(["exiftool", "-j", "-XMP:all", str(sidecar_path(photo))], capture_output=True,
                             text=True, check=True).stdout
        found, = json.loads(out)
        assert found["Subject"] == ["Holiday", "Rome", answer.name] and found["Rating"] == 4


def test_another_models_keywords_are_replaced(library):
    """Re-tagging with another model swaps this product's keyword and keeps the user's."""
    from landmark.inference.recognizer import Answer
    data = exiv2.XmpData()
    data["Xmp.dc.subject"] = "Holiday"

    def answer(name, score):
        return Answer(source="x", landmark_id=name[:3], name=name, score=score, is_landmark=score >= 0.3,
                      threshold=0.3, scoring="classifier", top_k=[])
    tagging.apply_answer(data, answer("Colosseum", 0.9), "model-a")
    tagging.apply_answer(data, answer("Petra", 0.8), "model-b")
    assert tagging._values(data, "Xmp.dc.subject") == ["Holiday", "Petra"]
    assert tagging._values(data, "Xmp.lr.hierarchicalSubject") == ["Landmarks|Petra"]
    assert tagging.tagged_model(data) == "model-b"
    tagging.apply_answer(data, answer("Petra", 0.1), "model-c")   # now no landmark: the keyword goes
    assert tagging._values(data, "Xmp.dc.subject") == ["Holiday"]
    assert tagging._values(data, "Xmp.landmark.verdict") == ["no landmark"]
    assert tagging._values(data, "Xmp.landmark.certainty") == ["no landmark"]


def test_second_run_skips_and_a_stopped_run_resumes(rec, library, monkeypatch):
    written, real = [], tagging.write_sidecar

    def stop_after_two(path, data):
        if len(written) == 2:
            raise KeyboardInterrupt   # the user pressed Ctrl-C (or the machine went down) mid-run
        real(path, data)
        written.append(path)
    monkeypatch.setattr(tagging, "write_sidecar", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        tagging.tag_photos(rec, [library], "model-a", progress=False, batch_size=1)
    monkeypatch.setattr(tagging, "write_sidecar", real)
    assert len(written) == 2
    stale = written[0].with_name(f".{written[0].name}.tmp99999999")   # what SIGKILL mid-write leaves (a pid no process has)
    stale.write_text("<half")
    stamps = {p: p.stat().st_mtime_ns for p in written}
    summary = tagging.tag_photos(rec, [library], "model-a", progress=False)
    assert summary.skipped == 2 and summary.tagged + summary.no_landmark == 2
    assert not stale.exists()
    assert {p: p.stat().st_mtime_ns for p in written} == stamps   # not rewritten
    def no_model():
        raise AssertionError("the model was loaded although every photo is tagged")
    again = tagging.tag_photos(no_model, [library], "model-a", progress=False)   # loads lazily: never here
    assert (again.skipped, again.tagged, again.no_landmark) == (4, 0, 0)


def test_unreadable_sidecar_is_left_alone(rec, library):
    photo = library / "misc" / "basket.jpg"
    sidecar_path(photo).write_text("<x:xmpmeta><broken")
    summary = tagging.tag_photos(rec, [photo], "model-a", progress=False)
    assert len(summary.unreadable) == 1 and "not readable XMP" in summary.unreadable[0][1]
    assert sidecar_path(photo).read_text() == "<x:xmpmeta><broken"


def test_in_place_writes_into_the_photo_only(rec, library):
    from PIL import Image
    photo = library / "misc" / f"{PHOTOS[0]}.jpg"
    photo.chmod(0o644)   # a copy of the read-only data: a read-only photo is not written in place
    pixels = Image.open(photo).tobytes()
    rec.threshold, old = 0.0, rec.threshold
    try:
        summary = tagging.tag_photos(rec, [photo], "model-a", in_place=True, progress=False)
    finally:
        rec.threshold = old
    assert summary.tagged == 1 and not sidecar_path(photo).exists()
    answer, = rec.recognize(photo)
    xmp = read_xmp(photo)
    assert xmp["Xmp.dc.subject"] == [answer.name] and xmp["Xmp.landmark.model"] == ["model-a"]
    assert Image.open(photo).tobytes() == pixels
    assert not list(photo.parent.glob(".*tmp*"))
    assert tagging.tag_photos(rec, [photo], "model-a", in_place=True, progress=False).skipped == 1


@pytest.mark.slow
def test_tag_command(recognizer_run, library):
    from landmark.cli import app
    result = CliRunner().invoke(app, ["tag", str(library), "--model", str(recognizer_run), "--threshold", "0"])
    assert result.exit_code == 1, result.output   # broken.jpg is unreadable
    assert "tagged 4, no landmark 0, skipped 0" in result.output
    assert "broken.jpg" in result.output and "not photos (left alone): .txt 1" in result.output
    again = CliRunner().invoke(app, ["tag", str(library / "2019"), "--model", str(recognizer_run), "--threshold", "0"])
    assert again.exit_code == 0 and "tagged 0, no landmark 0, skipped 2" in again.output
    missing = CliRunner().invoke(app, ["tag", str(library / "nope"), "--model", str(recognizer_run)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    # the threshold and the names decide the answers: either changed, every photo is answered again
    # (they were not part of the identity before 2026-12-07: the photos were skipped)
    default = CliRunner().invoke(app, ["tag", str(library / "2019"), "--model", str(recognizer_run)])
    assert default.exit_code == 0 and "skipped 0" in default.output, default.output
    sha = tagging.model_identity(recognizer_run)
    assert {read_xmp(sidecar_path(p))["Xmp.landmark.model"][0] for p in _photos(library / "2019")} == {sha}
    (library / "names.csv").write_text("landmark_id,name\n" + "".join(f"{k},Place {k}\n" for k in range(13)))
    photo = library / "misc" / f"{PHOTOS[0]}.jpg"
    named = CliRunner().invoke(app, ["tag", str(photo), "--model", str(recognizer_run), "--threshold", "0",
                                     "--names", str(library / "names.csv")])
    assert named.exit_code == 0 and "tagged 1, no landmark 0, skipped 0" in named.output, named.output
    xmp = read_xmp(sidecar_path(photo))
    assert xmp["Xmp.dc.subject"] == [f"Place {xmp['Xmp.landmark.landmarkId'][0]}"]
    assert xmp["Xmp.landmark.model"][0].startswith(f"{sha}+threshold:0.0+names:")
    (library / "names.csv").write_text("landmark_id,name\n" + "".join(f"{k},Site {k}\n" for k in range(13)))
    renamed = CliRunner().invoke(app, ["tag", str(photo), "--model", str(recognizer_run), "--threshold", "0",
                                       "--names", str(library / "names.csv")])
    assert "tagged 1, no landmark 0, skipped 0" in renamed.output, renamed.output   # other names: answered again
    assert read_xmp(sidecar_path(photo))["Xmp.dc.subject"] == [f"Site {xmp['Xmp.landmark.landmarkId'][0]}"]


@pytest.mark.slow
def test_a_killed_run_resumes(rec, recognizer_run, library):
    """SIGKILL a real `landmark tag` after its first sidecar: every sidecar left is whole XMP,
    and the next run tags only the rest."""
    import os
    import signal
    import sys
    import time
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tagging.__file__).rsplit("/landmark/", 1)[0],
                                                        os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from landmark.cli import main; sys.argv = ['landmark'] + sys.argv[1:]; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "tag", str(library), "--model", str(recognizer_run),
                             "--batch-size", "1", "--threshold", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(library.rglob("*.jpg.xmp")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = sorted(library.rglob("*.jpg.xmp"))
    assert done, "no sidecar was written before the kill"
    for sidecar in done:
        assert read_xmp(sidecar)["Xmp.landmark.verdict"]   # whole, readable XMP
    model = tagging.model_identity(recognizer_run, threshold=0)   # the killed run's identity (--threshold 0)
    summary = tagging.tag_photos(rec, [library], model, progress=False)
    assert summary.skipped == len(done) and summary.skipped + summary.tagged + summary.no_landmark == 4
    assert not [p for p in library.rglob(".*") if ".tmp" in p.name]


@pytest.mark.slow
def test_enrolment_into_the_index_re_answers_the_photos(l13, recognizer_run, recognizer_index, tmp_path):
    """`tag --index DIR` answers as `recognize --index DIR`; enrolling into DIR changes the identity
    written (checkpoint SHA-256 + index state), so the next `tag` answers the photos again, and a run
    with nothing changed skips them."""
    import pandas as pd

    from conftest import NEW_LANDMARK
    from landmark.cli import app
    from landmark.models.runtime import file_sha256
    folder = tmp_path / "my-index"
    shutil.copytree(recognizer_index, folder)
    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    library = tmp_path / "Pictures"
    library.mkdir()
    for i in sorted(solution.loc[solution["landmarks"] == NEW_LANDMARK, "id"]):   # 5 photos of Versailles
        shutil.copy(image_path(l13, i, "test"), library / f"{i}.jpg")
    photos = sorted(library.glob("*.jpg"))

    def tag_library():
        res = CliRunner().invoke(app, ["tag", str(library), "--model", str(recognizer_run), "--index", str(folder)])
        assert res.exit_code == 0, res.output
        return res.output, {p.name: read_xmp(sidecar_path(p)) for p in photos}

    out, before = tag_library()
    sha = file_sha256(recognizer_run / "checkpoints" / "best.pt")
    first = tagging.model_identity(recognizer_run, index=folder)
    assert first.startswith(sha + "+index:") and len(first) == 64 + 7 + 16
    assert {x["Xmp.landmark.model"][0] for x in before.values()} == {first}
    assert not any(answered(x) == "versailles" for x in before.values())   # never seen
    assert f"skipped {len(photos)}" in tag_library()[0]   # nothing changed: skipped

    enrol = tmp_path / "versailles"
    enrol.mkdir()
    train = pd.read_csv(l13 / "train.csv", dtype=str)
    for i in sorted(train.loc[train["landmark_id"] == NEW_LANDMARK, "id"])[:12]:
        (enrol / f"{i}.jpg").symlink_to(image_path(l13, i))
    added = CliRunner().invoke(app, ["index", "add", str(folder), "--images", str(enrol), "--label", "versailles",
                                     "--workers", "0"])
    assert added.exit_code == 0, added.output
    second = tagging.model_identity(recognizer_run, index=folder)
    assert second != first and second.startswith(sha + "+index:")
    out, after = tag_library()
    assert "skipped 0" in out   # every photo answered again
    assert {x["Xmp.landmark.model"][0] for x in after.values()} == {second}
    from landmark import Recognizer
    want = Recognizer.load(recognizer_run, index=folder).recognize(photos)   # what recognize --index answers
    assert [answered(after[p.name]) for p in photos] == [a.landmark_id for a in want]
    assert [after[p.name]["Xmp.landmark.verdict"][0] for p in photos] == [a.verdict for a in want]
    shown = [(a.landmark_id, a.score, a.threshold) for a in want]
    assert all(a.landmark_id == "versailles" for a in want), shown   # its best guess now (5 of 5 measured)
    hits = [a for a in want if a.is_landmark]
    assert hits, shown   # 1 of 5 above its calibrated threshold measured (random head, 12 photos enrolled)
    assert all(after[Path(a.source).name]["Xmp.dc.subject"] == [a.name] for a in hits)
    old = tagging._read_data(sidecar_path(photos[0]))   # a sidecar of an earlier version: the bare SHA-256
    old["Xmp.landmark.model"] = sha
    tagging.write_sidecar(sidecar_path(photos[0]), old)
    out, last = tag_library()   # answered once more (its index state was not recorded), the others skipped
    assert f"skipped {len(photos) - 1}" in out and last[photos[0].name]["Xmp.landmark.model"] == [second]
    assert f"skipped {len(photos)}" in tag_library()[0]   # and again nothing changed: skipped


def test_index_identity_follows_the_index_state(recognizer_index, tmp_path):
    """The index part of the identity: deterministic, blind to the versioned file names of a
    save, changed by the count; a missing index is one line."""
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    first = tagging.index_identity(folder)
    assert len(first) == 16 and first == tagging.index_identity(recognizer_index)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "version": "other", "files": {}}))
    assert tagging.index_identity(folder) == first
    (folder / "meta.json").write_text(json.dumps({**meta, "count": meta["count"] + 1}))
    assert tagging.index_identity(folder) != first
    with pytest.raises(FileNotFoundError, match="holds no index"):
        tagging.index_identity(tmp_path)
