"""landmark tag against hostile or broken input: landmark names with Lightroom's separator, existing
sidecars exiv2 only half reads (cut short, with a DTD: billion laughs, external entity)."""
import shutil

import pytest

from conftest import DATA

exiv2 = pytest.importorskip("exiv2", reason="exiv2 not installed: pip install 'landmark[tag]'")

from landmark.inference import tagging  # noqa: E402
from landmark.inference.recognizer import Answer  # noqa: E402
from landmark.inference.tagging import read_xmp, sidecar_path  # noqa: E402

PHOTO = DATA / "nonlandmarks" / "images" / "2/a/a/2aadb4261ffa716a.jpg"
HEAD = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
DESCRIPTION = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
               '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
               '<dc:subject><rdf:Bag><rdf:li>Holiday</rdf:li><rdf:li>%s</rdf:li></rdf:Bag></dc:subject>')
END = '</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>'
LAUGHS = "".join([f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10)])
BROKEN = {
    "cut short": HEAD + DESCRIPTION % "Rome" + "</dc:sub",   # another program died mid-write
    "billion laughs": HEAD + '<!DOCTYPE x:xmpmeta [<!ENTITY lol0 "lol">' + LAUGHS + "]>" + DESCRIPTION % "&lol9;" + END,
    "external entity": HEAD + '<!DOCTYPE x:xmpmeta [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
                       + DESCRIPTION % "&xxe;" + END,
}


class Saying:
    """A recogniser that answers ``name`` (score 0.9, a landmark) for every photo."""

    def __init__(self, name: str):
        self.name = name

    def recognize(self, images, sources):
        return [Answer(source=s, landmark_id="7", name=self.name, score=0.9, is_landmark=True, threshold=0.3,
                       scoring="classifier", top_k=[]) for s in sources]


@pytest.fixture
def photo(tmp_path):
    shutil.copy(PHOTO, tmp_path / "a.jpg")
    return tmp_path / "a.jpg"


def test_a_name_with_the_separator_is_replaced_by_the_next_model(photo):
    """'AC|DC' is written as the keyword 'AC/DC'; another model's answer removes that keyword
    (it was kept before, beside the new one: the earlier keywords were looked up as 'AC|DC')."""
    tagging.tag_photos(Saying("AC|DC"), [photo], "model-a", progress=False)
    first = read_xmp(sidecar_path(photo))
    assert first["Xmp.dc.subject"] == ["AC/DC"] and first["Xmp.lr.hierarchicalSubject"] == ["Landmarks|AC/DC"]
    assert first["Xmp.landmark.name"] == ["AC|DC"]
    tagging.tag_photos(Saying("Petra"), [photo], "model-b", progress=False)
    second = read_xmp(sidecar_path(photo))
    assert second["Xmp.dc.subject"] == ["Petra"]
    assert second["Xmp.lr.hierarchicalSubject"] == ["Landmarks|Petra"]
    assert second["Xmp.digiKam.TagsList"] == ["Landmarks/Petra"]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_sidecar_exiv2_reads_as_empty_is_left_alone(photo, kind):
    """exiv2 reads these as empty XMP (it logs the parse error); writing ours would have erased
    the user's 'Holiday' keyword. They are left byte for byte and listed."""
    sidecar = sidecar_path(photo)
    sidecar.write_text(BROKEN[kind])
    before = sidecar.read_bytes()
    with pytest.raises(ValueError, match="not readable XMP"):
        read_xmp(sidecar)
    summary = tagging.tag_photos(Saying("Petra"), [photo], "model-a", progress=False)
    assert (summary.tagged, summary.skipped) == (0, 0)
    assert [p for p, _ in summary.unreadable] == [str(photo)]
    assert "not readable XMP" in summary.unreadable[0][1]
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in photo.parent.iterdir()) == ["a.jpg", "a.jpg.xmp"]


def test_an_empty_but_valid_sidecar_is_still_written(photo):
    """The error catching does not refuse a well-formed sidecar without properties."""
    sidecar_path(photo).write_text(HEAD + '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                                   'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                                   'rdf:about=""/></rdf:RDF></x:xmpmeta>' + '\n<?xpacket end="w"?>')
    summary = tagging.tag_photos(Saying("Petra"), [photo], "model-a", progress=False)
    assert summary.tagged == 1 and not summary.unreadable
    assert read_xmp(sidecar_path(photo))["Xmp.dc.subject"] == ["Petra"]


def test_a_private_sidecar_stays_private(photo):
    """The replacement keeps the old sidecar's permissions (was: a 0600 sidecar came back 0644)."""
    sidecar = sidecar_path(photo)
    sidecar.write_text(HEAD + DESCRIPTION % "Rome" + END)
    sidecar.chmod(0o600)
    summary = tagging.tag_photos(Saying("Petra"), [photo], "model-a", progress=False)
    assert summary.tagged == 1
    assert read_xmp(sidecar)["Xmp.dc.subject"] == ["Holiday", "Rome", "Petra"]
    assert sidecar.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("in_place", [False, True], ids=["sidecar", "in place"])
def test_a_read_only_file_is_left_alone(photo, in_place):
    """A sidecar (or, in place, a photo) its owner may not write is listed, not replaced, even by
    a process that could replace it (root, or anyone with a writable folder: os.replace)."""
    target = photo if in_place else sidecar_path(photo)
    if not in_place:
        target.write_text(HEAD + DESCRIPTION % "Rome" + END)
    target.chmod(0o444)
    before = target.read_bytes()
    summary = tagging.tag_photos(Saying("Petra"), [photo], "model-a", in_place=in_place, progress=False)
    assert summary.tagged == 0 and len(summary.unreadable) == 1
    assert "is read-only: make it writable (chmod u+w)" in summary.unreadable[0][1]
    assert target.read_bytes() == before and target.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in photo.parent.iterdir()) == (["a.jpg"] if in_place else ["a.jpg", "a.jpg.xmp"])


def test_a_second_run_leaves_the_first_runs_temporary_files(photo):
    """Two ``landmark tag`` on one folder: the walk deletes only temporary files of processes
    that are gone (was: every one, so the other run's os.replace failed mid-write)."""
    import os
    alive = photo.with_name(f".a.jpg.xmp.tmp{os.getppid()}")   # a running process (pytest's parent)
    dead = photo.with_name(".a.jpg.xmp.tmp99999999")            # above any pid Linux gives
    alive.write_text("<being written")
    dead.write_text("<left by a kill")
    summary = tagging.tag_photos(Saying("Petra"), [photo.parent], "model-a", progress=False)
    assert summary.tagged == 1
    assert alive.exists() and not dead.exists()


def test_pipes_are_listed_not_read(photo):
    """A named pipe as a photo (in a folder or given itself) or as a sidecar is listed and not
    opened (was: a pipe given was skipped silently; a pipe sidecar blocked the run forever)."""
    import os
    import signal

    def hung(*_):
        raise TimeoutError("landmark tag blocked reading a pipe")
    os.mkfifo(photo.with_name("pipe.jpg"))
    second = photo.with_name("b.jpg")
    shutil.copy(photo, second)
    os.mkfifo(sidecar_path(second))
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        whole = tagging.tag_photos(Saying("Petra"), [photo.parent], "model-a", progress=False)
        alone = tagging.tag_photos(Saying("Petra"), [photo.with_name("pipe.jpg")], "model-a", progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert whole.tagged == 1   # a.jpg
    assert sorted(p for p, _ in whole.unreadable) == [str(second), str(photo.with_name("pipe.jpg"))]
    assert all("is not a regular file" in why for _, why in whole.unreadable)
    assert [p for p, _ in alone.unreadable] == [str(photo.with_name("pipe.jpg"))]


def test_linked_folders_are_followed_once_and_what_is_not_entered_is_listed(tmp_path):
    """Links to folders are followed; a link back up (a loop), a link to a folder walked already, a
    folder given twice and a broken link are each listed with the reason, and each photo is tagged once."""
    library, elsewhere = tmp_path / "Pictures", tmp_path / "External" / "trip"
    (library / "2019").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    shutil.copy(PHOTO, library / "2019" / "a.jpg")
    shutil.copy(PHOTO, elsewhere / "b.jpg")
    (library / "trip").symlink_to(elsewhere)                      # a photo library spread over disks
    (library / "2019" / "up").symlink_to(library)                 # a loop
    (library / "zz-trip-again").symlink_to(elsewhere)             # the same folder twice
    (library / "gone").symlink_to(tmp_path / "unplugged-disk")    # a broken link
    summary = tagging.tag_photos(Saying("Colosseum"), [library, library / "2019"], "model-a", progress=False)
    assert summary.tagged == 2 and summary.unreadable == []
    assert read_xmp(sidecar_path(elsewhere / "b.jpg"))["Xmp.dc.subject"] == ["Colosseum"]   # beside the real photo
    reasons = dict(summary.not_entered)
    assert set(reasons) == {str(library / "2019" / "up"), str(library / "zz-trip-again"), str(library / "gone"),
                            str(library / "2019")}
    assert reasons[str(library / "2019" / "up")].startswith(f"{library} (a link) is walked already as {library}")
    assert f"is walked already as {library / 'trip'}" in reasons[str(library / "zz-trip-again")]
    assert "a broken link" in reasons[str(library / "gone")]
    lines = summary.lines()
    assert f"not entered: {library / 'gone'}: a broken link (to {tmp_path / 'unplugged-disk'}, which does not exist)" \
        in lines
    again = tagging.tag_photos(Saying("Colosseum"), [library], "model-a", progress=False)
    assert again.skipped == 2 and again.tagged == 0


def test_a_link_that_cannot_be_read_is_listed(tmp_path, monkeypatch):
    """A link whose target cannot be read (``/proc/1/cwd`` under a library holding a link to
    ``/proc``: EACCES) or that is gone since its folder was listed is listed as not entered
    (was: ``PermissionError`` from os.readlink ended the whole run)."""
    import os
    shutil.copy(PHOTO, tmp_path / "a.jpg")
    (tmp_path / "cwd").symlink_to(tmp_path / "elsewhere")
    link = str(tmp_path / "cwd")
    readlink = os.readlink

    def denied(path, *args, **kwargs):
        if str(path) == link:
            raise PermissionError(13, "Permission denied", link)
        return readlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "readlink", denied)
    summary = tagging.tag_photos(Saying("Petra"), [tmp_path], "model-a", progress=False)
    assert summary.tagged == 1
    assert summary.not_entered == [(link, "a link that cannot be followed (Permission denied)")]


@pytest.mark.parametrize("in_place", [False, True], ids=["sidecar", "in place"])
def test_a_link_is_not_replaced_by_a_file(photo, tmp_path_factory, in_place):
    """A sidecar (or, in place, a photo) that is a link to a file elsewhere is listed and left
    as it is (was: os.replace silently put a new file, in place a whole copy of the photo, where
    the link was, and the file it points to kept its old tags)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")   # outside the folder tagged
    real = elsewhere / ("b.jpg" if in_place else "a.jpg.xmp")
    if in_place:
        shutil.copy(photo, real)
        real.chmod(0o644)
        photo.unlink()
    else:
        real.write_text(HEAD + DESCRIPTION % "Rome" + END)
    link = photo if in_place else sidecar_path(photo)
    link.symlink_to(real)
    before = real.read_bytes()
    summary = tagging.tag_photos(Saying("Petra"), [photo.parent], "model-a", in_place=in_place, progress=False)
    assert summary.tagged == 0 and [p for p, _ in summary.unreadable] == [str(photo)]
    assert f"{link} is a link (to {real}): not written" in summary.unreadable[0][1]
    assert link.is_symlink() and real.read_bytes() == before
    assert sorted(p.name for p in photo.parent.iterdir()) == ["a.jpg"] + ([] if in_place else ["a.jpg.xmp"])


def test_a_photo_given_twice_is_tagged_once(photo):
    """``landmark tag a.jpg FOLDER a.jpg``: the photo was recognised and written three times, and the
    summary said 'tagged 3' and 'Petra 3' for one photo."""
    second = photo.with_name("b.jpg")
    shutil.copy(photo, second)
    summary = tagging.tag_photos(Saying("Petra"), [photo, photo.parent, photo, f"{photo.parent}/./a.jpg"],
                                 "model-a", progress=False)
    assert summary.tagged == 2 and summary.landmarks == {"Petra": 2} and summary.unreadable == []


def test_a_link_to_a_folder_above_the_library_is_not_entered(tmp_path):
    """Pictures/root -> / (or -> a parent of Pictures) walked the whole disk and wrote sidecars
    beside every photo on it; now listed as not entered, the photos outside untouched."""
    library = tmp_path / "home" / "Pictures"
    library.mkdir(parents=True)
    shutil.copy(PHOTO, library / "a.jpg")
    shutil.copy(PHOTO, tmp_path / "home" / "elsewhere.jpg")
    (library / "up").symlink_to(tmp_path / "home")
    summary = tagging.tag_photos(Saying("Petra"), [library], "model-a", progress=False)
    assert summary.tagged == 1 and not sidecar_path(tmp_path / "home" / "elsewhere.jpg").exists()
    assert summary.not_entered == [(str(library / "up"), f"{tmp_path / 'home'} holds {library}, a folder given: "
                                    f"entering it would tag photos outside the folders given (give "
                                    f"{tmp_path / 'home'} itself to tag it all)")]


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="no /proc on this system")
def test_a_link_into_proc_is_not_entered(tmp_path):
    """Pictures/proc -> /proc: through /proc/PID/cwd the walk reached the working folder of every
    process (8605 photos of other trees here); now the link is listed and nothing below it walked."""
    shutil.copy(PHOTO, tmp_path / "a.jpg")
    (tmp_path / "proc").symlink_to("/proc")
    (tmp_path / "me").symlink_to("/proc/self")
    not_entered = []
    photos = list(tagging.walk_photos([tmp_path], None, not_entered))
    assert photos == [tmp_path / "a.jpg"]
    assert [p for p, _ in not_entered] == [str(tmp_path / "me"), str(tmp_path / "proc")]
    assert not_entered[1][1] == "/proc is in /proc, the kernel's view of the system, not photos"
