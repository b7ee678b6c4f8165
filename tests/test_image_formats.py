"""Formats whose header cannot be trusted are never opened: an ICO declares 16 x 16 and
holds a PNG of any size, which Pillow decodes while *opening* the file (before any limit of
``check_shape`` is checked: a 0.9 MB ICO held 900 MB and blocked the service's event loop
for 6 s), and an EPS is handed to Ghostscript, an external interpreter."""
import io
import struct

import pytest
from PIL import Image

from landmark.data.images import ImageError, load_image, probe


def ico_holding(width: int, height: int) -> bytes:
    """An ICO whose directory says 16 x 16 and whose one image is a flat PNG of width x height."""
    buf = io.BytesIO()
    Image.new("RGBA", (width, height), (10, 20, 30, 255)).save(buf, "PNG", compress_level=9)
    png = buf.getvalue()
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"


def test_an_ico_whose_header_lies_is_refused_before_its_pixels_are_decoded():
    data = ico_holding(3000, 2000)
    with Image.open(io.BytesIO(data)) as img:   # what Pillow alone does: decoded on open, 16 x 16 no longer
        assert img.size == (3000, 2000)
    for read in (probe, load_image):
        with pytest.raises(ImageError, match="ICO"):
            read(data)


def test_an_eps_is_refused_instead_of_being_given_to_ghostscript(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(EPS)
    with Image.open(path) as img:   # Pillow reads it (and would run Ghostscript on load)
        assert img.format == "EPS"
    for read in (probe, load_image):
        with pytest.raises(ImageError, match="EPS"):
            read(path)


def test_the_service_reserves_nothing_for_a_refused_format():
    from landmark.serving.budget import needed_bytes
    from landmark.serving.uploads import Limits, Refusal, check_headers
    assert needed_bytes(ico_holding(3000, 2000), 144) == 0   # it was 3000 x 2000 x 8 bytes: decoded to measure
    with pytest.raises(Refusal) as err:
        check_headers([("icon.ico", ico_holding(3000, 2000))], Limits())
    assert err.value.status == 415


def test_the_usual_formats_are_still_read():
    from landmark.data.images import REFUSED_FORMATS
    assert {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"}.isdisjoint(REFUSED_FORMATS)
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, fmt)
        assert probe(buf.getvalue()) == (40, 30)
        assert load_image(buf.getvalue()).size == (40, 30)
