"""Tests for petdream.photos: what a person uploading pet photos sees, file by file."""

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from petdream import photos
from petdream.photos import (
    MAX_PHOTOS,
    IntakeReport,
    NotEnoughPhotosError,
    Photo,
    Rejection,
    intake,
    salient_square,
)
from photo_factory import encode, jpeg_with_orientation, make_photo, png_claiming_size, scene_with_object

DREAMBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dreambench"
WHITE, RED, BLUE, GREEN, BLACK = (255, 255, 255), (200, 0, 0), (0, 0, 200), (0, 160, 0), (0, 0, 0)
SMALL = 64  # training resolution for synthetic tests: fast, and min_side becomes 32 px


def only_accepted(report: IntakeReport) -> Photo:
    assert report.rejected == [] and len(report.accepted) == 1, report.rejected
    return report.accepted[0]


def only_rejected(report: IntakeReport) -> Rejection:
    assert report.accepted == [] and len(report.rejected) == 1
    return report.rejected[0]


def pixel(photo: Photo, x: float, y: float) -> np.ndarray:
    """RGB of the output image at fractions (x, y) of its width and height."""
    image = photo.image
    return np.array(image.getpixel((int(x * image.width), int(y * image.height))), dtype=int)


def assert_color(actual: np.ndarray, expected, tolerance: int = 12) -> None:
    assert np.abs(actual - np.array(expected)).max() <= tolerance, f"{actual.tolist()} != {expected}"


def halves(mode: str, left, right, size: int = 256) -> Image.Image:
    """A square image in `mode` whose left half is `left` and right half is `right`."""
    image = Image.new(mode, (size, size), left)
    image.paste(right, (size // 2, 0, size, size))
    return image


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file, format, params",
    [
        ("pet.jpg", "JPEG", {"quality": 95}),
        ("pet.png", "PNG", {}),
        ("pet.webp", "WEBP", {"quality": 95}),
        ("pet.gif", "GIF", {}),
        ("pet.bmp", "BMP", {}),
        ("pet.tiff", "TIFF", {}),
        ("pet.heic", "HEIF", {"quality": 95}),
        # Many cameras write multi-picture JPEGs, which Pillow reads as MPO.
        ("camera.jpg", "MPO", {"save_all": True, "append_images": [make_photo(2, (256, 256))]}),
    ],
)
def test_supported_formats_are_accepted_as_rgb_squares(file, format, params):
    original = make_photo(1, (256, 256))
    photo = only_accepted(intake([(file, encode(original, format, **params))], SMALL))

    assert (photo.file, photo.width, photo.height) == (file, 256, 256)
    assert photo.image.mode == "RGB" and photo.image.size == (SMALL, SMALL)
    expected = np.asarray(original.resize((SMALL, SMALL), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(np.asarray(photo.image, dtype=int) - expected).mean() < 8


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (128, 128), RED), Image.new("RGB", (128, 128), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])

    photo = only_accepted(intake([("wag.gif", data)], SMALL))
    assert_color(pixel(photo, 0.5, 0.5), RED)


def test_unsupported_format_is_rejected_by_name():
    data = encode(make_photo(1, (128, 128)), "ICO")

    rejection = only_rejected(intake([("pet.ico", data)], SMALL))
    assert rejection.reason.startswith("pet.ico is not a photo in a supported format")
    assert "JPEG, PNG" in rejection.reason


# --- orientation and modes -------------------------------------------------------------------


@pytest.mark.parametrize("orientation, top, bottom", [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_orientation_is_applied_before_size_and_crop(orientation, top, bottom):
    # Stored landscape, red left half; rotated for display it stands upright with red on one end.
    stored = halves("RGB", RED, BLUE).resize((300, 200))
    data = jpeg_with_orientation(stored, orientation)

    photo = only_accepted(intake([("turned.jpg", data)], SMALL))
    assert (photo.width, photo.height) == (200, 300)
    assert_color(pixel(photo, 0.5, 0.05), top, tolerance=30)
    assert_color(pixel(photo, 0.5, 0.95), bottom, tolerance=30)


def rgb_with_transparent_key() -> bytes:
    return encode(halves("RGB", BLACK, RED), "PNG", transparency=BLACK)


def palette_image(transparency: bool, format: str) -> bytes:
    image = halves("P", 0, 1)
    image.putpalette([*BLACK, *GREEN])
    return encode(image, format, **({"transparency": 0} if transparency else {}))


MODE_CASES = {
    "RGBA": (lambda: encode(halves("RGBA", (0, 0, 0, 0), (*RED, 255)), "PNG"), WHITE, RED),
    "LA": (lambda: encode(halves("LA", (0, 0), (50, 255)), "PNG"), WHITE, (50, 50, 50)),
    "RGB+tRNS": (rgb_with_transparent_key, WHITE, RED),
    "P+transparency PNG": (lambda: palette_image(True, "PNG"), WHITE, GREEN),
    "P+transparency GIF": (lambda: palette_image(True, "GIF"), WHITE, GREEN),
    "P": (lambda: palette_image(False, "PNG"), BLACK, GREEN),
    "CMYK": (lambda: encode(halves("CMYK", (0, 255, 255, 0), (0, 0, 0, 0)), "TIFF"), (255, 0, 0), WHITE),
    "I;16": (lambda: encode(halves("I;16", 0, 128 * 257), "PNG"), BLACK, (128, 128, 128)),
    "I": (lambda: encode(halves("I", 0, 128 * 257), "TIFF"), BLACK, (128, 128, 128)),
    "L": (lambda: encode(halves("L", 30, 220), "PNG"), (30, 30, 30), (220, 220, 220)),
    "1": (lambda: encode(halves("1", 0, 1), "BMP"), BLACK, WHITE),
}


@pytest.mark.parametrize("case", MODE_CASES)
def test_every_mode_ends_as_rgb_with_transparency_on_white(case):
    make, left, right = MODE_CASES[case]

    photo = only_accepted(intake([("pet.img", make())], SMALL))
    assert photo.image.mode == "RGB" and photo.image.size == (SMALL, SMALL)
    assert_color(pixel(photo, 0.2, 0.5), left)
    assert_color(pixel(photo, 0.8, 0.5), right)


# --- sizes, bombs and broken files -----------------------------------------------------------


def test_too_small_photo_is_rejected_with_the_size_needed():
    report = intake([("thumb.jpg", encode(make_photo(1, (200, 150)), "JPEG"))], 512)

    assert only_rejected(report).reason == (
        "thumb.jpg is 200x150 px; photos need at least 256 px on the shorter side. "
        "Use the original photo, not a thumbnail or a screenshot."
    )


def test_min_side_defaults_to_half_the_resolution_and_can_be_set():
    exactly = ("exactly.png", encode(make_photo(1, (300, 256)), "PNG"))
    just_under = ("under.png", encode(make_photo(2, (300, 255)), "PNG"))

    report = intake([exactly, just_under], 512)
    assert [p.file for p in report.accepted] == ["exactly.png"]
    assert "300x255 px" in report.rejected[0].reason and "256 px" in report.rejected[0].reason

    strict = intake([exactly], 512, min_side=512)
    assert "at least 512 px" in only_rejected(strict).reason


@pytest.fixture
def decoded_files(monkeypatch):
    """Sizes of the opened images whose pixels got decoded (ImageFile.load was called)."""
    decoded = []
    original_load = ImageFile.ImageFile.load

    def spying_load(image):
        decoded.append(image.size)
        return original_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    return decoded


@pytest.mark.parametrize(
    "width, height, says",
    [
        (100_000, 100_000, "is over 89 megapixels"),  # past Pillow's DecompressionBombError
        (10_000, 10_000, "is over 89 megapixels"),  # past Pillow's DecompressionBombWarning
        (8_000, 7_000, "is 8000x7000 px"),  # under Pillow's limits, over ours (50 MP)
        (13_000, 100, "is 13000x100 px"),  # few pixels, but absurdly long
    ],
)
def test_huge_claimed_dimensions_are_rejected_before_decoding(width, height, says, decoded_files):
    filters_before = list(warnings.filters)

    start = time.perf_counter()
    report = intake([("bomb.png", png_claiming_size(width, height))])
    assert time.perf_counter() - start < 1.0

    reason = only_rejected(report).reason
    assert reason.startswith(f"bomb.png {says}, beyond the limit of 50 megapixels")
    assert "decompression bomb" in reason
    assert decoded_files == []
    assert warnings.filters == filters_before and not ImageFile.LOAD_TRUNCATED_IMAGES


def test_real_oversized_image_file_is_never_decoded(tmp_path, decoded_files):
    path = tmp_path / "scan.png"
    Image.new("1", (8_000, 7_000)).save(path)  # a genuine 56 MP image, 7 kB on disk

    reason = only_rejected(intake([path])).reason
    assert reason.startswith("scan.png is 8000x7000 px, beyond the limit of 50 megapixels")
    assert decoded_files == []


def test_file_over_the_size_cap_is_rejected_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as file:
        file.truncate(31 * 2**20)  # sparse: 31 MB of size without writing them
    monkeypatch.setattr(photos.Image, "open", lambda *args, **kwargs: pytest.fail("opened"))

    report = intake([path, ("huge-upload.jpg", bytes(31 * 2**20))])
    assert [r.reason for r in report.rejected] == [
        f"{name} is 31 MB; files over 30 MB are not accepted. "
        "Export the photo as a JPEG from your phone or photo app."
        for name in ("huge.jpg", "huge-upload.jpg")
    ]


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def scrambled_pixel_data(data: bytes) -> bytes:
    start = data.index(b"IDAT") + 20
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + 200]) + data[start + 200 :]


BROKEN_FILES = {
    "empty.jpg": (lambda: b"", "is empty (0 bytes)"),
    "notes.jpg": (lambda: b"Remember to buy dog food.\n", "is not a photo in a supported format"),
    "noise.png": (lambda: np.random.default_rng(0).bytes(5000), "is not a photo in a supported format"),
    "cut.jpg": (lambda: truncated(encode(make_photo(1), "JPEG")), "is damaged or truncated"),
    "cut.png": (lambda: truncated(encode(make_photo(1), "PNG")), "is damaged or truncated"),
    "cut.heic": (lambda: truncated(encode(make_photo(1), "HEIF")), "is damaged or truncated"),
    "garbled.png": (lambda: scrambled_pixel_data(encode(make_photo(1), "PNG")), "is damaged or truncated"),
}


@pytest.mark.parametrize("file", BROKEN_FILES)
def test_broken_file_is_rejected_with_a_reason_naming_it(file):
    make, says = BROKEN_FILES[file]

    rejection = only_rejected(intake([(file, make())], SMALL))
    assert rejection.file == file
    assert rejection.reason.startswith(f"{file} {says}")
    assert rejection.reason.rstrip().endswith(".") and "Upload" in rejection.reason


def test_unreadable_path_is_rejected(tmp_path):
    rejection = only_rejected(intake([tmp_path / "gone.jpg"], SMALL))
    assert rejection.reason.startswith("gone.jpg could not be read (No such file or directory).")


def test_unexpected_error_costs_one_photo_not_the_upload(monkeypatch):
    real_phash = photos.imagehash.phash

    def phash_failing_on_tall_images(image):
        if image.height > image.width:
            raise RuntimeError("bug")
        return real_phash(image)

    monkeypatch.setattr(photos.imagehash, "phash", phash_failing_on_tall_images)
    wide, tall = encode(make_photo(0, (90, 80)), "PNG"), encode(make_photo(1, (80, 90)), "PNG")

    report = intake([("0.png", wide), ("1.png", tall)], SMALL)
    assert [p.file for p in report.accepted] == ["0.png"]
    assert report.rejected == [Rejection("1.png", (
        "1.png could not be processed (RuntimeError). Save it again as JPEG or PNG and upload that instead."
    ))]


def test_an_upload_that_is_not_a_file_is_a_programming_error():
    with pytest.raises(TypeError, match="path or a \\(name, bytes\\) tuple"):
        intake([42])


# --- duplicates ------------------------------------------------------------------------------


def test_exact_copy_is_dropped_naming_the_photo_it_copies():
    data = encode(make_photo(1), "JPEG")

    report = intake([("rex.jpg", data), ("rex (1).jpg", data)], SMALL)
    assert [p.file for p in report.accepted] == ["rex.jpg"]
    assert report.rejected[0].reason.startswith("rex (1).jpg is an exact copy of rex.jpg")


def test_a_photo_uploaded_twice_is_named_once_and_said_to_be_twice():
    data = encode(make_photo(1), "JPEG")

    report = intake([("rex.jpg", data), ("rex.jpg", data)], SMALL)
    assert [p.file for p in report.accepted] == ["rex.jpg"]
    assert report.rejected[0].reason == "rex.jpg was uploaded twice; the first copy is used and this one is left out: nothing to do."
    shrunk = encode(make_photo(1).resize((400, 300), Image.Resampling.LANCZOS), "JPEG", quality=60)
    report = intake([("rex.jpg", data), ("rex.jpg", shrunk)], SMALL)
    assert report.rejected[0].reason.startswith("rex.jpg looks nearly the same as another file of the same name")


def test_same_pixels_in_another_format_is_dropped():
    image = make_photo(1)

    report = intake([("rex.png", encode(image, "PNG")), ("rex.bmp", encode(image, "BMP"))], SMALL)
    assert [p.file for p in report.accepted] == ["rex.png"]
    assert report.rejected[0].reason.startswith("rex.bmp has exactly the same picture as rex.png")


def test_resized_recompressed_copy_is_dropped_but_different_photos_are_kept():
    image = make_photo(1, (800, 600))
    shrunk = encode(image.resize((400, 300), Image.Resampling.LANCZOS), "JPEG", quality=60)
    other = encode(make_photo(2, (800, 600)), "JPEG")

    uploads = [("rex.jpg", encode(image, "JPEG")), ("rex-small.jpg", shrunk), ("max.jpg", other)]

    report = intake(uploads, SMALL)
    assert [p.file for p in report.accepted] == ["rex.jpg", "max.jpg"]
    assert report.rejected[0].reason.startswith("rex-small.jpg looks nearly the same as rex.jpg")


# --- crop ------------------------------------------------------------------------------------


def brown_fraction(image: Image.Image) -> float:
    """Share of pixels of the synthetic pet's fur colour (see photo_factory.scene_with_object)."""
    r, g, b = np.moveaxis(np.asarray(image, dtype=int), -1, 0)
    return float(((r - b > 40) & (r < 190)).mean())


@pytest.mark.parametrize(
    "size, object_box",
    [
        ((960, 320), (10, 70, 190, 250)),  # pet at the left edge of a landscape
        ((960, 320), (770, 70, 950, 250)),  # at the right edge
        ((320, 960), (70, 770, 250, 950)),  # at the bottom of a portrait
    ],
)
def test_square_crop_keeps_a_pet_that_a_centre_crop_would_cut(size, object_box):
    scene = scene_with_object(size, object_box)
    left, top = (size[0] - 320) // 2, (size[1] - 320) // 2
    centre = scene.crop((left, top, left + 320, top + 320))
    assert brown_fraction(centre) == 0  # the test is only meaningful if the centre misses the pet

    photo = only_accepted(intake([("pet.png", encode(scene, "PNG"))], 128))
    assert photo.image.size == (128, 128)
    assert brown_fraction(photo.image) > 0.15  # the whole pet covers ~0.25 of a 320 px square


def test_crop_of_evenly_busy_scene_stays_near_the_centre():
    noise = np.random.default_rng(0).integers(0, 256, (300, 900, 3), dtype=np.uint8)

    left, top, right, bottom = salient_square(Image.fromarray(noise))
    assert (top, bottom, right - left) == (0, 300, 300)
    assert abs(left - 300) <= 45


# --- limits and the report -------------------------------------------------------------------


def test_photos_beyond_the_maximum_are_rejected_in_order():
    uploads = [(f"{i:02}.png", encode(make_photo(i, (SMALL, SMALL)), "PNG")) for i in range(MAX_PHOTOS + 3)]

    report = intake(uploads, SMALL)
    assert [p.file for p in report.accepted] == [f"{i:02}.png" for i in range(MAX_PHOTOS)]
    assert [r.file for r in report.rejected] == ["50.png", "51.png", "52.png"]
    for rejection in report.rejected:
        over = f"{rejection.file} is over the limit of 50 photos and was not used."
        assert rejection.reason.startswith(over)


def test_too_few_photos_say_how_many_more_are_needed():
    uploads = [(f"{name}.png", encode(make_photo(seed), "PNG")) for seed, name in enumerate("ab")]
    uploads.append(("c.jpg", b""))

    report = intake(uploads, SMALL)
    assert (report.enough, report.missing) == (False, 1)
    with pytest.raises(NotEnoughPhotosError) as raised:
        report.require_enough()
    assert str(raised.value) == (
        "Only 2 usable photos; DreamBooth needs at least 3. Add 1 more photo of your pet. "
        "Not used: c.jpg (see the reason given for each)."
    )
    assert isinstance(raised.value, ValueError)


def test_no_usable_photo_at_all():
    report = intake([], SMALL)

    assert (report.enough, report.missing) == (False, 3)
    with pytest.raises(NotEnoughPhotosError) as raised:
        report.require_enough()
    assert str(raised.value) == "No usable photos; DreamBooth needs at least 3. Add 3 more photos of your pet."


def test_enough_photos_pass_and_min_photos_is_configurable():
    uploads = [(f"{i}.png", encode(make_photo(i), "PNG")) for i in range(3)]

    report = intake(uploads, SMALL)
    assert (report.enough, report.missing) == (True, 0)
    report.require_enough()
    assert intake(uploads, SMALL, min_photos=4).missing == 1


def test_report_to_dict_is_json_ready():
    data = encode(make_photo(1, (120, 100)), "PNG")

    report = intake([("rex.png", data), ("bad.jpg", b"")], SMALL)
    assert json.loads(json.dumps(report.to_dict())) == {
        "accepted": [
            {"file": "rex.png", "sha256": hashlib.sha256(data).hexdigest(), "width": 120, "height": 100}
        ],
        "rejected": [{"file": "bad.jpg", "reason": report.rejected[0].reason}],
    }


def test_save_names_files_by_content_in_a_new_folder(tmp_path):
    report = intake([(f"{i}.png", encode(make_photo(i), "PNG")) for i in range(2)], SMALL)

    paths = report.save(tmp_path / "run" / "instance")
    assert paths == [tmp_path / "run" / "instance" / f"{p.sha256[:16]}.png" for p in report.accepted]
    for path, photo in zip(paths, report.accepted):
        with Image.open(path) as saved:
            assert saved.mode == "RGB" and saved.size == (SMALL, SMALL)
            assert np.array_equal(np.asarray(saved), np.asarray(photo.image))


# --- safety of names and originals -----------------------------------------------------------


def test_file_names_never_become_paths(tmp_path):
    uploads = [
        ("../../etc/passwd.jpg", encode(make_photo(1), "JPEG")),
        ("..\\..\\Windows\\evil.png", encode(make_photo(2), "PNG")),
        ("/abs/dir/", encode(make_photo(3), "PNG")),
        ("../../bad.jpg", b"not a photo"),
    ]
    (tmp_path / "out").mkdir()

    report = intake(uploads, SMALL)
    assert [p.file for p in report.accepted] == ["passwd.jpg", "evil.png", "(unnamed file)"]
    assert [r.file for r in report.rejected] == ["bad.jpg"]
    assert report.rejected[0].reason.startswith("bad.jpg is not a photo")

    report.save(tmp_path / "out")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(f"out/{p.sha256[:16]}.png" for p in report.accepted)


def test_originals_on_disk_are_never_modified(tmp_path):
    files = {
        "turned.jpg": jpeg_with_orientation(make_photo(1, (300, 200)), 6),
        "clear.png": encode(halves("RGBA", (0, 0, 0, 0), (*RED, 255)), "PNG"),
        "deep.png": encode(halves("I;16", 0, 40_000), "PNG"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    report = intake(sorted(tmp_path.iterdir()), SMALL)
    assert len(report.accepted) == 3
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_good_photos_survive_a_folder_of_bad_neighbours(tmp_path):
    good = {f"good{i}.jpg": encode(make_photo(i, (640, 480)), "JPEG") for i in range(4)}
    bad = {
        "broken.jpg": (truncated(good["good0.jpg"]), "is damaged or truncated"),
        "tiny.png": (encode(make_photo(7, (40, 30)), "PNG"), "is 40x30 px; photos need at least 256 px"),
        "bomb.png": (png_claiming_size(100_000, 100_000), "is over 89 megapixels"),
        "good1_copy.jpg": (good["good1.jpg"], "is an exact copy of good1.jpg"),
        "readme.jpg": (b"# not a photo\n", "is not a photo in a supported format"),
    }
    for name, data in [*good.items(), *((name, data) for name, (data, _) in bad.items())]:
        (tmp_path / name).write_bytes(data)

    report = intake(sorted(tmp_path.iterdir(), key=lambda p: p.name), 512)
    assert sorted(p.file for p in report.accepted) == sorted(good)
    assert all(p.image.size == (512, 512) for p in report.accepted)
    reasons = {r.file: r.reason for r in report.rejected}
    assert sorted(reasons) == sorted(bad)
    for name, (_, says) in bad.items():
        assert reasons[name].startswith(f"{name} {says}")


def test_paths_may_be_str_or_pathlike(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(encode(make_photo(i), "PNG"))

    report = intake([str(tmp_path / "0.png"), tmp_path / "1.png"], SMALL)
    assert [p.file for p in report.accepted] == ["0.png", "1.png"]


# --- real photos -----------------------------------------------------------------------------


def dreambench(subject: str) -> list[Path]:
    folder = DREAMBENCH / subject
    if not folder.is_dir():
        pytest.skip(f"real pet photos not found at {folder} (the shared DreamBench folder beside main/)")
    return sorted(folder.glob("*.jpg"))


def test_all_real_dog_photos_are_accepted_as_distinct_512px_squares():
    dog = dreambench("dog")

    report = intake(dog, 512)
    assert report.rejected == []
    assert [p.file for p in report.accepted] == [p.name for p in dog] and len(dog) == 5
    assert all(p.image.size == (512, 512) and p.image.mode == "RGB" for p in report.accepted)


def test_real_dog_and_cat_photos_mix():
    dog, cat = dreambench("dog"), dreambench("cat")

    report = intake([*dog, *cat], 512)
    assert report.rejected == [] and len(report.accepted) == len(dog) + len(cat) == 10
    assert report.enough


def test_a_re_saved_real_photo_is_caught_as_a_near_duplicate():
    first = dreambench("dog2")[0]
    with Image.open(first) as image:
        half = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    copy = encode(half, "JPEG", quality=70)

    report = intake([first, ("dog2-whatsapp.jpg", copy)], 512)
    assert [p.file for p in report.accepted] == [first.name]
    assert report.rejected[0].reason.startswith(f"dog2-whatsapp.jpg looks nearly the same as {first.name}")
