"""``genrl.media``: images as users save them (16-bit, alpha, palette, CMYK, EXIF-rotated) come in
8-bit, upright and with their full range; files it cannot read are named."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from genrl.media import fit_image, open_image, open_rgb, read_frames
from genrl.tasks.rows import image_refs

RAMP16 = (np.arange(64, dtype=np.uint16) * 1040).reshape(8, 8)  # 0..65520, the whole 16-bit range


def _png16(width: int, height: int, color_type: int, pixels: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (PIL writes no 16-bit colour PNGs): IHDR, one IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_a_16_bit_grayscale_png_keeps_its_range(tmp_path):
    """PIL clips I;16 to 255 when converting: the ramp came in with min 0.933 and 97% of pixels at 1.0."""
    path = tmp_path / "g16.png"
    Image.fromarray(RAMP16).save(path)
    assert Image.open(path).mode == "I;16"
    expected = np.rint(RAMP16 / 257) / 255
    gray = fit_image(open_rgb(str(path), "x", "L"), 8, 8)
    assert gray.shape == (1, 8, 8)
    np.testing.assert_allclose(gray[0].numpy(), expected, atol=1e-6)
    rgb = fit_image(open_rgb(str(path), "x"), 8, 8)
    np.testing.assert_allclose(rgb.numpy(), np.broadcast_to(expected, (3, 8, 8)), atol=1e-6)
    from genrl.tasks.vlm_data import resize_into  # vlm_data's images: open_image, then RGB

    vlm = np.asarray(resize_into(open_image(str(path), "x"), 1, 10_000))
    np.testing.assert_array_equal(vlm[..., 0], np.rint(RAMP16 / 257))


def test_32_bit_integer_and_float_images(tmp_path):
    """Mode I within 0..65535 is 16-bit (a PGM with maxval 1023, which PIL stretches to 65535); wider
    integers and float pixels have no known white level and are refused, naming the file."""
    pgm = b"P5 2 2 1023\n" + np.array([1023, 512, 0, 100], ">u2").tobytes()
    im = open_image(pgm, "x")
    assert (im.mode, np.asarray(im).ravel().tolist()) == ("L", [255, 128, 0, 25])
    wide = tmp_path / "wide.tif"
    Image.fromarray(RAMP16.astype(np.int32) + 70_000).save(wide)
    with pytest.raises(
        ValueError, match=r"^x \(.*wide.tif\): 32-bit integer pixels \(70000..135520\) outside 0..65535"
    ):
        open_image(str(wide), "x")
    flt = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(flt)
    with pytest.raises(ValueError, match=r"^row 2: image \(.*f.tif\): float pixels have no known white level"):
        open_rgb(str(flt), "row 2")


def test_16_bit_colour_pngs_are_scaled_not_clipped():
    """16-bit RGB and gray+alpha PNGs: full range -> 0..255 (PIL decodes these to 8 bits itself)."""
    rgb = _png16(2, 1, 2, np.array([[[65535, 32896, 0], [257, 0, 65535]]]))
    assert np.asarray(open_rgb(rgb, "x")).tolist() == [[[255, 128, 0], [1, 0, 255]]]
    gray_alpha = _png16(2, 1, 4, np.array([[[32896, 65535], [0, 0]]]))  # opaque mid gray, transparent black
    assert np.asarray(open_rgb(gray_alpha, "x", "L")).tolist() == [[128, 255]]


def test_transparency_is_composited_on_white(tmp_path):
    """Transparent pixels came in as whatever colour they stored (black here) once alpha was dropped."""
    rgba = np.array([[[0, 0, 0, 0], [255, 0, 0, 128], [10, 20, 30, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(open_rgb(str(tmp_path / "a.png"), "x")).astype(int)
    np.testing.assert_allclose(out[0], [[255, 255, 255], [255, 127, 127], [10, 20, 30]], atol=1)
    Image.fromarray(np.array([[[0, 0], [90, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert np.asarray(open_rgb(str(tmp_path / "la.png"), "x", "L")).tolist() == [[255, 90]]
    Image.fromarray(np.array([[0, 90]], np.uint8)).save(tmp_path / "trns.png", transparency=0)  # gray 0 clear
    assert np.asarray(open_rgb(str(tmp_path / "trns.png"), "x", "L")).tolist() == [[255, 90]]
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png", transparency=0)  # palette entry 0 (black) transparent
    assert np.asarray(open_rgb(str(tmp_path / "p.png"), "x")).tolist() == [[[255, 255, 255], [200, 0, 0]]]
    frames = []
    for k in range(2):  # an animated GIF whose transparent colour is black
        f = Image.new("P", (4, 4), 0)
        f.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        f.putpixel((k, 0), 1)
        frames.append(f)
    frames[0].save(tmp_path / "t.gif", save_all=True, append_images=frames[1:], transparency=0, duration=100)
    video = read_frames(str(tmp_path / "t.gif"), "x")
    assert video.shape == (2, 3, 4, 4)
    assert video[:, :, 3, 3].tolist() == [[1.0, 1.0, 1.0]] * 2  # transparent: white, not black
    assert video[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_palette_bilevel_and_cmyk_images_convert_to_their_colours(tmp_path):
    pal = Image.new("P", (1, 1), 0)
    pal.putpalette([12, 34, 56] + [0] * 765)
    Image.new("CMYK", (1, 1), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    Image.new("1", (2, 1), 1).save(tmp_path / "b.png")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert np.asarray(open_rgb(buf.getvalue(), "x")).tolist() == [[[12, 34, 56]]]
    assert np.asarray(open_rgb(str(tmp_path / "c.tif"), "x")).tolist() == [[[0, 255, 255]]]  # cyan
    assert np.asarray(open_rgb(str(tmp_path / "b.png"), "x", "L")).tolist() == [[255, 255]]


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with EXIF Orientation=6 (rotate 90 degrees clockwise) came in sideways."""
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, 16:] = 255  # stored: black left half, white right half
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    im = open_rgb(str(tmp_path / "phone.jpg"), "x")
    assert im.size == (16, 32)  # upright: portrait
    top, bottom = np.asarray(im)[:16].mean(), np.asarray(im)[16:].mean()
    assert top < 20 and bottom > 235  # the stored left half is the top once turned clockwise


def test_a_directory_is_named_as_one_not_as_missing(tmp_path):
    (tmp_path / "pics").mkdir()
    with pytest.raises(ValueError, match=r"^row 0: image 0 is a directory, not a file: .*pics$"):
        image_refs("pics", str(tmp_path), "row 0")
    with pytest.raises(ValueError, match=r"^row 0: image \(.*pics\) is a directory, not a file$"):
        open_rgb(str(tmp_path / "pics"), "row 0")
    with pytest.raises(ValueError, match=r"^row 0: video \(.*pics\) is a directory, not a file$"):
        read_frames(str(tmp_path / "pics"), "row 0")
    with pytest.raises(ValueError, match=r"^row 0: image \(.*gone.png\) not found$"):
        open_rgb(str(tmp_path / "gone.png"), "row 0")


def test_an_empty_image_path_is_named_and_a_home_path_is_expanded(tmp_path, monkeypatch):
    """``"image": ""`` was reported as "a directory, not a file" (the data file's folder); ``~/a.png`` was
    joined to the data file's folder, although data.train_files and image_root expand ``~``."""
    for empty in ("", "  "):
        with pytest.raises(ValueError, match=r"^w.jsonl:3: image 0 is an empty path$"):
            image_refs(empty, str(tmp_path), "w.jsonl:3")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.png").write_bytes(b"x")
    assert image_refs("~/a.png", "/elsewhere", "w.jsonl:1") == [str(tmp_path / "a.png")]
    assert image_refs(["a.png"], str(tmp_path), "w.jsonl:1") == [str(tmp_path / "a.png")]


def _frames(values, size=(6, 5)):
    return [Image.fromarray(np.full((*size, 3), v, np.uint8)) for v in values]


@pytest.mark.parametrize(
    "fmt, kwargs",
    [("GIF", {"duration": 100, "loop": 0}), ("PNG", {"duration": 100}), ("WEBP", {"duration": 100}), ("TIFF", {})],
)
def test_an_animation_or_multi_page_file_is_refused_where_one_image_is_expected(tmp_path, fmt, kwargs):
    """An animated GIF / PNG / WebP or a multi-page TIFF as an image was read as its first frame, silently
    (a SePPO winner or a VLM image of one frame of a clip). It is named; one frame of it is read."""
    path = tmp_path / f"a.{fmt.lower()}"
    first, *rest = _frames([20, 200, 90])
    first.save(path, format=fmt, save_all=True, append_images=rest, **kwargs)
    assert Image.open(path).n_frames == 3
    with pytest.raises(ValueError, match=rf"^row 4: image \({path}\) has 3 frames \(an animation or a multi-page"):
        open_image(str(path), "row 4: image")
    still = tmp_path / f"s.{fmt.lower()}"
    first.save(still, format=fmt)
    assert np.asarray(open_image(str(still), "x")).mean() == pytest.approx(20, abs=2)
    assert read_frames(str(path), "row 4").shape[0] == 3  # as a video it is read whole
    with pytest.raises(ValueError, match="has 3 frames"):  # a frame of a frame list is one image
        read_frames([str(still), str(path)], "row 4")
    if fmt == "TIFF":  # counting a damaged file's pages fails: named as corrupt, not a TypeError
        cut = tmp_path / "cut.tiff"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with warnings.catch_warnings(), pytest.raises(ValueError, match=r"^row 4: image \(.*cut.tiff\) is corrupt"):
            warnings.simplefilter("ignore")  # PIL's own "Corrupt EXIF data"
            open_image(str(cut), "row 4: image")


def test_a_cameras_mpo_jpeg_is_read_as_its_first_frame(tmp_path):
    """A camera's JPEG opens as MPO with a second (preview) frame: that is one photo, not an animation."""
    path = tmp_path / "photo.jpg"
    first, second = _frames([30, 30], size=(16, 16))
    first.save(path, format="MPO", save_all=True, append_images=[second])
    im = Image.open(path)
    assert im.format == "MPO" and im.n_frames == 2
    assert np.asarray(open_image(str(path), "x")).mean() == pytest.approx(30, abs=3)
