"""Synthetic test images for the photo intake tests.

Everything is generated in memory from a seed, so tests need no fixture files and
every bad input (bombs, truncation, odd modes) is built exactly where it is used.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def make_photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photo-like RGB image of `size` (width, height) px.

    A smooth two-colour gradient, a dozen random filled shapes and mild noise: enough
    low-frequency structure that different seeds give clearly different perceptual
    hashes, the way two different photos do.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    top, bottom = rng.integers(0, 256, (2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3))
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, x1 = sorted(rng.integers(0, width, 2))
        y0, y1 = sorted(rng.integers(0, height, 2))
        box = (int(x0), int(y0), int(x1) + 8, int(y1) + 8)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)

    noise = rng.normal(0.0, 6.0, (height, width, 3))
    noisy = np.asarray(image, dtype=np.float64) + noise
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "RGB")


def scene_with_object(size: tuple[int, int], object_box: tuple[int, int, int, int]) -> Image.Image:
    """A flat grey RGB scene of `size` px with one textured brown "pet" in `object_box`.

    The object is the only thing in the picture worth keeping, so a good crop must
    contain it wherever it sits.
    """
    rng = np.random.default_rng(0)
    image = Image.new("RGB", size, (200, 200, 200))
    left, top, right, bottom = object_box
    fur = rng.normal(0.0, 25.0, (bottom - top, right - left, 1)) + (120, 70, 30)
    patch = Image.fromarray(fur.clip(0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, patch.width - 1, patch.height - 1), fill=255)
    image.paste(patch, (left, top), mask)
    return image


def encode(image: Image.Image, format: str, **params) -> bytes:
    """`image` saved in `format` ("JPEG", "PNG", "HEIF", ...), as the bytes of a file."""
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    return buffer.getvalue()


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    """`image` as JPEG bytes whose EXIF Orientation tag (0x0112) is `orientation` (1-8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=92, exif=exif.tobytes())


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width` x `height` RGB pixels.

    The chunks have correct CRCs, so a reader trusts the header; the pixel data is a
    single empty row, so actually decoding it would fail (or need width*height*3 bytes).
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4))
        + chunk(b"IEND", b"")
    )
