"""Reading images safely.

Every path that opens a user's photo goes through :func:`read_image`, so corrupt, odd and
hostile files behave the same everywhere: a clear :class:`~facerec.errors.ImageReadError`
or a correct 8-bit BGR image, never a traceback and never unbounded memory.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facerec.errors import ImageReadError

#: Largest image decoded, in pixels (8000 x 8000 = 64 MP fits; a 60000 x 60000 header
#: would need 10.8 GB as BGR and is refused before any pixel is decoded).
DEFAULT_MAX_PIXELS = 100_000_000

#: File suffixes treated as images when a directory is scanned.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"})


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive), sorted by path."""
    root = Path(folder)
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _probe_size(data: bytes, name: str) -> tuple[int, int]:
    """Image size from its header alone (Pillow parses headers without decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: refused, the image header claims too many pixels ({e})") from None
    except Exception:
        return (0, 0)  # unknown to Pillow; let OpenCV try and judge


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, 3)`` uint8 BGR.

    Grey and alpha images become 3-channel BGR (alpha is dropped), 16-bit images are
    scaled to 8 bits, CMYK JPEGs are converted, and EXIF orientation is applied so a
    photo taken on its side comes out upright.

    Args:
        data: the file's bytes.
        name: shown in error messages.
        max_pixels: refuse images whose header claims more pixels than this.

    Raises:
        ImageReadError: empty, not an image, truncated beyond decoding, or too large.
    """
    if len(data) == 0:
        raise ImageReadError(f"{name}: the file is empty (0 bytes)")
    w, h = _probe_size(data, name)
    if w * h > max_pixels:
        raise ImageReadError(
            f"{name}: {w}x{h} pixels is more than the limit of {max_pixels:,}; "
            "downscale the image or raise the limit"
        )
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None or img.size == 0:
        raise ImageReadError(f"{name}: not a readable image (corrupt, truncated or not an image format)")
    if img.dtype == np.uint16:
        img = (img // 256).astype(np.uint8)  # the high byte
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 BGR; see :func:`decode_image`.

    Raises:
        ImageReadError: missing, unreadable or undecodable file.
    """
    return decode_image(read_image_bytes(path), str(Path(path)), max_pixels)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, undecoded (decoded elsewhere, e.g. on a cluster worker,
    with :func:`decode_image` and ``str(Path(path))`` as the name).

    Raises:
        ImageReadError: missing or unreadable file, or a directory.
    """
    p = Path(path)
    try:
        return p.read_bytes()
    except IsADirectoryError:
        raise ImageReadError(f"{p}: is a directory, not an image") from None
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{p}: cannot be read ({e.strerror or e})") from None
