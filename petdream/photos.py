"""Intake of uploaded pet photos: validate, deduplicate and normalize them for DreamBooth.

Every upload ends up either as an accepted `Photo` (RGB, resolution x resolution, cropped
around the pet) or as a `Rejection` whose reason tells the person what is wrong and what to
do. A bad file never stops the others: `intake` does not raise because of file contents.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

pillow_heif.register_heif_opener()

MAX_PHOTOS = 50
MIN_PHOTOS = 3

MAX_FILE_BYTES = 30 * 1024 * 1024  # a 48 MP phone JPEG is ~15 MB; anything bigger is not a plain photo
MAX_PIXELS = 50_000_000  # admits 48 MP phone photos (8064x6048); decoding one takes ~150 MB of RGB
MAX_SIDE = 12_000  # px; longer than any camera sensor, only panoramas and crafted files exceed it
# Perceptual hashes (64 bits) of a resized or re-compressed copy differ by 0-4 bits; distinct
# photos of the same dog in DreamBench differ by 16 or more. 6 sits between with margin both ways.
NEAR_DUPLICATE_BITS = 6
SALIENCY_SIZE = 128  # px, long side of the grayscale thumbnail the crop is planned on
CENTER_PRIOR = 0.3  # saliency at the far edges counts 30% less than at the centre

# Only formats people upload photos in; this also keeps exotic Pillow plugins away from uploads.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC"
# warnings.catch_warnings swaps process-wide filters; two threads (Gradio runs handlers in a
# pool) overlapping could restore each other's filters and leave ours installed for good.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Photo:
    """One accepted photo, normalized for training."""

    file: str  # the uploaded file's original name, for display only (basename, never used as a path)
    image: Image.Image = field(compare=False, repr=False)  # RGB, resolution x resolution
    sha256: str  # hex sha256 of the original file bytes
    width: int  # original width in px, after EXIF orientation
    height: int  # original height in px, after EXIF orientation


@dataclass(frozen=True)
class Rejection:
    """One upload that was not used, and why."""

    file: str
    reason: str  # a full sentence: which file, what is wrong, what to do


class NotEnoughPhotosError(ValueError):
    """Raised by `IntakeReport.require_enough` when too few photos are usable for training."""


@dataclass
class IntakeReport:
    """What `intake` made of the uploads: each one is in exactly one list, in upload order."""

    accepted: list[Photo]
    rejected: list[Rejection]
    min_photos: int = MIN_PHOTOS

    @property
    def enough(self) -> bool:
        return len(self.accepted) >= self.min_photos

    @property
    def missing(self) -> int:
        """How many more usable photos are needed; 0 when there are enough."""
        return max(0, self.min_photos - len(self.accepted))

    def shortfall(self) -> str | None:
        """What to do about too few usable photos, naming the files not used; None when there are enough."""
        if self.enough:
            return None
        count = len(self.accepted)
        have = f"Only {_plural(count, 'usable photo')}" if count else "No usable photos"
        message = (
            f"{have}; DreamBooth needs at least {self.min_photos}. "
            f"Add {_plural(self.missing, 'more photo')} of your pet."
        )
        if self.rejected:
            names = ", ".join(rejection.file for rejection in self.rejected[:10])
            more = f" and {len(self.rejected) - 10} more" if len(self.rejected) > 10 else ""
            message += f" Not used: {names}{more} (see the reason given for each)."
        return message

    def require_enough(self) -> None:
        if (message := self.shortfall()) is not None:
            raise NotEnoughPhotosError(message)

    def to_dict(self) -> dict:
        return {
            "accepted": [
                {"file": p.file, "sha256": p.sha256, "width": p.width, "height": p.height}
                for p in self.accepted
            ],
            "rejected": [{"file": r.file, "reason": r.reason} for r in self.rejected],
        }

    def save(self, folder) -> list[Path]:
        """Write accepted images as `<sha256[:16]>.png` in `folder` (created if needed).

        Files are named by content, never by the uploaded name, so no upload can choose
        where it is written.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for photo in self.accepted:
            path = folder / f"{photo.sha256[:16]}.png"
            photo.image.save(path, "PNG")
            paths.append(path)
        return paths


class _Rejected(Exception):
    """Internal: the current upload is rejected; the message is the reason shown to the person."""


@dataclass(frozen=True)
class _Fingerprint:
    """What an accepted photo is compared against to spot later duplicates."""

    file: str
    sha256: str  # of the file bytes
    pixels_sha256: str  # of the decoded RGB pixels, so a PNG and a BMP of one picture match
    phash: imagehash.ImageHash


def intake(
    uploads,
    resolution: int = 512,
    *,
    min_side: int | None = None,
    min_photos: int = MIN_PHOTOS,
    max_photos: int = MAX_PHOTOS,
) -> IntakeReport:
    """Check and normalize uploaded photos, in the given order.

    uploads: paths (str or os.PathLike) or (file name, file bytes) tuples.
    resolution: side in px of the square training images.
    min_side: smallest accepted shorter side in px of an original; default resolution // 2.
    Only the first `max_photos` usable photos are kept; later usable ones are rejected.
    """
    min_side = resolution // 2 if min_side is None else min_side
    report = IntakeReport(accepted=[], rejected=[], min_photos=min_photos)
    seen: list[_Fingerprint] = []
    for upload in uploads:
        name = _display_name(upload)
        try:
            data = _read(upload, name)
            sha256 = hashlib.sha256(data).hexdigest()
            _reject_duplicate_bytes(name, sha256, seen)
            image = _decode(name, data)
            _reject_too_small(name, image.size, min_side)
            rgb = _to_rgb(image)
            fingerprint = _Fingerprint(name, sha256, _pixels_sha256(rgb), imagehash.phash(rgb))
            _reject_duplicate_look(fingerprint, seen)
            if len(report.accepted) >= max_photos:
                raise _Rejected(
                    f"{name} is over the limit of {max_photos} photos and was not used. "
                    f"Remove other photos first if you want this one in the training set."
                )
            box = salient_square(rgb)
            square = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box)
            report.accepted.append(Photo(name, square, sha256, rgb.width, rgb.height))
            seen.append(fingerprint)
        except _Rejected as rejected:
            report.rejected.append(Rejection(name, str(rejected)))
        except Exception as error:  # a bug or an exotic file must cost one photo, not the upload
            report.rejected.append(Rejection(name, (
                f"{name} could not be processed ({type(error).__name__}). "
                f"Save it again as JPEG or PNG and upload that instead."
            )))
    return report


def _display_name(upload) -> str:
    """The basename of an upload's path or file name; only ever shown, never opened."""
    if isinstance(upload, (str, os.PathLike)):
        name = os.fsdecode(os.fspath(upload))
    elif isinstance(upload, tuple) and len(upload) == 2:
        name = str(upload[0])
    else:
        raise TypeError(f"an upload must be a path or a (name, bytes) tuple, not {type(upload).__name__}")
    # Split on both separators: a name typed on Windows arrives with backslashes on any server.
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "(unnamed file)"


def _read(upload, name: str) -> bytes:
    """The upload's bytes, at most MAX_FILE_BYTES of them; a path's size is checked before reading."""
    if isinstance(upload, tuple):
        data = bytes(upload[1])
    else:
        try:
            _reject_too_big(name, os.path.getsize(upload))
            with open(upload, "rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
        except OSError as error:
            raise _Rejected(
                f"{name} could not be read ({error.strerror or 'read error'}). "
                f"Check that the file exists and upload it again."
            ) from error
    _reject_too_big(name, len(data))
    if not data:
        raise _Rejected(f"{name} is empty (0 bytes). Upload the photo again; the transfer may have failed.")
    return data


def _reject_too_big(name: str, num_bytes: int) -> None:
    if num_bytes > MAX_FILE_BYTES:
        raise _Rejected(
            f"{name} is {num_bytes / 2**20:.0f} MB; files over {MAX_FILE_BYTES // 2**20} MB are not "
            f"accepted. Export the photo as a JPEG from your phone or photo app."
        )


def _decode(name: str, data: bytes) -> Image.Image:
    """Decode `data` fully and apply its EXIF orientation; dimensions are checked before any pixel.

    Image.open reads only the header, so size limits are enforced before decoding allocates
    width*height*channels bytes. Pillow's own bomb warning becomes an error here, locally.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            pixels = f"over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels"  # Pillow's own limit
            raise _Rejected(_too_large(name, pixels)) from error
        except Exception as error:
            raise _Rejected(
                f"{name} is not a photo in a supported format ({FORMAT_NAMES}), or its header is "
                f"damaged. Upload the original photo file."
            ) from error
        width, height = image.size
        if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
            raise _Rejected(_too_large(name, f"{width}x{height} px"))
        try:
            image.load()  # Pillow decodes lazily: truncation and corruption surface only here
            ImageOps.exif_transpose(image, in_place=True)
            return image
        except Exception as error:  # decoders fail in many ways (OSError, SyntaxError, EOFError, ...)
            raise _Rejected(
                f"{name} is damaged or truncated and could not be decoded. "
                f"Upload the original file again, or export it anew from your photo app."
            ) from error


def _too_large(name: str, size: str) -> str:
    return (
        f"{name} is {size}, beyond the limit of {MAX_PIXELS // 1_000_000} megapixels and "
        f"{MAX_SIDE} px per side (it may be a decompression bomb). "
        f"Upload a normal-size photo or resize it first."
    )


def _reject_too_small(name: str, size: tuple[int, int], min_side: int) -> None:
    width, height = size
    if min(width, height) < min_side:
        raise _Rejected(
            f"{name} is {width}x{height} px; photos need at least {min_side} px on the shorter "
            f"side. Use the original photo, not a thumbnail or a screenshot."
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparent areas become white, 16-bit values are scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow would clip 16-bit values at 255 (a white image); scale the 0..65535 range instead.
        levels = np.asarray(image, dtype=np.float64).clip(0, 65535) / 257
        image = Image.fromarray(levels.round().astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


def _pixels_sha256(rgb: Image.Image) -> str:
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def _reject_duplicate_bytes(name: str, sha256: str, seen: list[_Fingerprint]) -> None:
    for other in seen:
        if other.sha256 == sha256:
            raise _Rejected(
                f"{name} was uploaded twice; the first copy is used and this one is left out: nothing to do."
                if name == other.file else
                f"{name} is an exact copy of {other.file}, which is already used. "
                f"Add a different photo of your pet instead."
            )


def _reject_duplicate_look(fingerprint: _Fingerprint, seen: list[_Fingerprint]) -> None:
    """Reject a photo whose pixels equal, or look nearly the same as, an accepted one's.

    A duplicate adds no information and makes DreamBooth memorise that one shot.
    """
    name = fingerprint.file
    for other in seen:
        same = "another file of the same name" if name == other.file else other.file
        if other.pixels_sha256 == fingerprint.pixels_sha256:
            raise _Rejected(
                f"{name} has exactly the same picture as {same}, which is already used. "
                f"Add a different photo of your pet instead."
            )
        if fingerprint.phash - other.phash <= NEAR_DUPLICATE_BITS:
            raise _Rejected(
                f"{name} looks nearly the same as {same} (a resized or re-saved copy), "
                f"which is already used. Add a photo with another pose, angle or background."
            )


def salient_square(rgb: Image.Image) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) in px of the square, side = shorter side, holding the pet.

    The square slides along the long axis to where spectral-residual saliency, weighted by a
    mild centre prior, has the most mass: a pet near the edge is kept, a flat scene is centred.
    """
    width, height = rgb.size
    side, long_side = min(width, height), max(width, height)
    if side == long_side:
        return (0, 0, width, height)
    saliency = spectral_residual_saliency(rgb)
    profile = saliency.sum(axis=0 if width > height else 1)  # saliency mass per step along the long axis
    steps = len(profile)
    profile = profile * (1 - CENTER_PRIOR * np.linspace(-1, 1, steps) ** 2)
    window = max(1, round(steps * side / long_side))
    cumulative = np.concatenate([[0.0], np.cumsum(profile)])
    best_start = int(np.argmax(cumulative[window:] - cumulative[:-window]))
    offset = round(best_start / max(1, steps - window) * (long_side - side))  # thumbnail -> full px
    return (offset, 0, offset + side, side) if width > height else (0, offset, side, offset + side)


def spectral_residual_saliency(rgb: Image.Image) -> np.ndarray:
    """Saliency map, shape (h, w) float, of `rgb` shrunk to SALIENCY_SIZE px on its long side.

    Spectral residual (Hou & Zhang, CVPR 2007): the log amplitude spectrum minus its local
    average keeps what is unexpected in the picture; flat or repetitive background cancels out.
    """
    scale = SALIENCY_SIZE / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    gray = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR).convert("L"), dtype=np.float64)
    spectrum = np.fft.fft2(gray / 255)
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    padded = np.pad(log_amplitude, 1, mode="edge")
    local_average = np.lib.stride_tricks.sliding_window_view(padded, (3, 3)).mean(axis=(-2, -1))
    residual = log_amplitude - local_average
    return np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
