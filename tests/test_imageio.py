"""Bad and odd image files: a clear ImageReadError or a correct 8-bit BGR image."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facerec.errors import ImageReadError
from facerec.imageio import decode_image, list_images, read_image


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels but holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _jpeg_bytes(img_rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img_rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is a text file, not a photo\n", "not a readable image"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not a readable image"),
    ],
    ids=["zero-bytes", "text-named-jpg", "random-bytes"],
)
def test_unreadable_files_raise_clear_errors(tmp_path, content, message):
    p = tmp_path / "photo.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as e:
        read_image(p)
    assert "photo.jpg" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_truncated_jpeg_is_an_error_or_an_image(tmp_path, photo):
    data = photo("face_recognition_examples/biden/biden.jpg").read_bytes()
    for cut in (200, len(data) // 2):
        p = tmp_path / f"cut{cut}.jpg"
        p.write_bytes(data[:cut])
        try:
            img = read_image(p)
        except ImageReadError as e:
            assert "cut" in str(e)
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_png_header_claiming_60000_squared_is_refused_before_decoding():
    with pytest.raises(ImageReadError, match="too many pixels|more than the limit"):
        decode_image(_png_header(60000, 60000), "bomb.png")


def test_pixel_limit_is_configurable():
    ok = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    assert decode_image(ok, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match="limit"):
        decode_image(ok, max_pixels=9_999)


def test_grayscale_alpha_16bit_cmyk_become_bgr8():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    gray = cv2.imencode(".png", np.full((40, 60), 77, np.uint8))[1].tobytes()
    out = decode_image(gray)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8 and (out == 77).all()

    bgra = np.dstack([rgb[..., ::-1], np.full((40, 60), 128, np.uint8)])
    out = decode_image(cv2.imencode(".png", bgra)[1].tobytes())
    assert out.shape == (40, 60, 3) and out[0, 0, 2] == 200

    deep = np.full((40, 60, 3), 50000, np.uint16)
    out = decode_image(cv2.imencode(".png", deep)[1].tobytes())
    assert out.dtype == np.uint8 and out[0, 0, 0] == 50000 >> 8

    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    out = decode_image(buf.getvalue())
    assert out.shape == (40, 60, 3)
    assert out[20, 30, 2] > 150 and out[20, 30, 0] < 60  # still red, as BGR


def test_exif_rotated_photo_is_shown_upright(photo):
    """A portrait stored sideways with EXIF orientation 6 decodes upright."""
    upright = cv2.cvtColor(read_image(photo("face_recognition_examples/biden/biden.jpg")), cv2.COLOR_BGR2RGB)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = decode_image(_jpeg_bytes(stored, exif=exif.tobytes()))
    assert out.shape[:2] == upright.shape[:2]
    diff = np.abs(out[..., ::-1].astype(int) - upright.astype(int)).mean()
    assert diff < 8, diff


def test_list_images_filters_by_suffix(tmp_path):
    for n in ("a.JPG", "b.png", "c.txt", "d.jpeg"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "d.jpeg"]
