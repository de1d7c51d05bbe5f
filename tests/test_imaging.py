"""Image intake against a corpus of good and bad files generated in tmp_path."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from leukgui.core import imaging
from leukgui.core.imaging import (
    ImageError,
    decode_image,
    discover,
    read_image_size,
    thumbnail,
    to_model_input,
)
from leukgui.core.results import (
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    FileError,
    InputFile,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnmc-samples"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _cell(h: int = 32, w: int = 32) -> np.ndarray:
    """A deterministic RGB uint8 test image with distinct R, G and B planes."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = (np.arange(w)[None, :] * 7) % 256
    rgb[..., 1] = (np.arange(h)[:, None] * 5) % 256
    rgb[..., 2] = 99
    return rgb


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    bgr = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
    assert ok
    return buf.tobytes()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _pil_bytes(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that is nothing but a valid IHDR chunk claiming width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def _reason(path: Path, **kw: object) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(path, **kw)
    assert str(info.value) == info.value.reason
    return info.value.reason


def _symlink(target: Path, link: Path) -> None:
    try:
        os.symlink(target, link, target_is_directory=target.is_dir())
    except (OSError, NotImplementedError) as exc:  # e.g. Windows without developer mode
        pytest.skip(f"cannot create symbolic links here: {exc}")


# --------------------------------------------------------------------------------------------
# decode_image: good files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_round_trip(tmp_path: Path, ext: str) -> None:
    rgb = _cell(20, 30)
    out = decode_image(_write(tmp_path / f"c{ext}", _encode(rgb, ext)))
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_decodes_close_and_in_rgb_order(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = decode_image(_write(tmp_path / "c.jpg", _encode(rgb, ".jpg")))
    assert out.shape == (32, 32, 3)
    assert abs(int(out[..., 0].mean()) - 200) < 6 and out[..., 2].mean() < 6


def test_jpeg_with_trailing_garbage_is_fine(tmp_path: Path) -> None:
    data = _encode(_cell(), ".jpg") + b"\x00junk appended by a camera" * 10
    assert decode_image(_write(tmp_path / "c.jpg", data)).shape == (32, 32, 3)


def test_upper_case_extensions(tmp_path: Path) -> None:
    rgb = _cell()
    bmp = _write(tmp_path / "CELL.BMP", _encode(rgb, ".bmp"))
    tif = _write(tmp_path / "cell.Tif", _encode(rgb, ".tif"))
    files, errors = discover([tmp_path])
    assert errors == [] and [f.path for f in files] == [bmp, tif]
    np.testing.assert_array_equal(decode_image(bmp), rgb)
    np.testing.assert_array_equal(decode_image(tif), rgb)


def test_16bit_tiff_scaled_to_8bit(tmp_path: Path) -> None:
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[0, 0] = (65535, 0, 257 * 100)
    rgb16[0, 1] = (257 * 100 + 128, 257 * 100 + 129, 300)  # rounding: 100, 101, 1
    path = tmp_path / "c16.tif"
    tifffile.imwrite(path, rgb16, photometric="rgb")
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [255, 0, 100]
    assert out[0, 1].tolist() == [100, 101, 1]


def test_16bit_png_scaled_to_8bit(tmp_path: Path) -> None:
    rgb16 = np.full((10, 10, 3), 257 * 40, np.uint16)
    rgb16[..., 0] = 65535
    out = decode_image(_write(tmp_path / "c16.png", _encode(rgb16, ".png")))
    assert out.dtype == np.uint8
    assert out[5, 5].tolist() == [255, 40, 40]


def test_float_tiff(tmp_path: Path) -> None:
    unit = np.zeros((8, 8), np.float32)
    unit[0, :3] = (0.0, 0.5, 1.0)
    tifffile.imwrite(tmp_path / "unit.tif", unit)
    assert decode_image(tmp_path / "unit.tif")[0, :3, 0].tolist() == [0, 128, 255]
    big = np.zeros((8, 8), np.float32)
    big[0, :3] = (-5.0, 100.4, 300.0)
    tifffile.imwrite(tmp_path / "big.tif", big)
    assert decode_image(tmp_path / "big.tif")[0, :3, 1].tolist() == [0, 100, 255]


def test_multipage_tiff_uses_first_page(tmp_path: Path) -> None:
    pages = np.stack([np.full((10, 10, 3), v, np.uint8) for v in (11, 22, 33)])
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="rgb")
    assert np.all(decode_image(tmp_path / "pages.tif") == 11)
    assert imaging.read_image(tmp_path / "pages.tif").notes == ("first of 3 pages used",)


def test_grayscale_png_becomes_three_channels(tmp_path: Path) -> None:
    gray = (np.arange(100, dtype=np.uint8).reshape(10, 10) * 2).astype(np.uint8)
    out = decode_image(_write(tmp_path / "g.png", _encode(gray, ".png")))
    assert out.shape == (10, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_png_composited_over_black(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[...] = (200, 100, 50, 255)
    rgba[0, 0] = (255, 255, 255, 0)  # fully transparent white -> black
    rgba[0, 1] = (200, 100, 50, 128)  # half transparent -> about half as bright
    path = _write(tmp_path / "a.png", _pil_bytes(Image.fromarray(rgba, "RGBA")))
    out = decode_image(path)
    assert out.shape == (10, 10, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [100, 50, 25]
    assert out[5, 5].tolist() == [200, 100, 50]


def test_gray_alpha_png(tmp_path: Path) -> None:
    la = np.zeros((10, 10, 2), np.uint8)
    la[...] = (200, 255)
    la[0, 0] = (255, 0)
    out = decode_image(_write(tmp_path / "la.png", _pil_bytes(Image.fromarray(la, "LA"))))
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [200, 200, 200]


def test_palette_png_colours(tmp_path: Path) -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 - 3) * 3)
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    out = decode_image(_write(tmp_path / "p.png", _pil_bytes(img)))
    assert out.shape == (10, 10, 3)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[0, 2].tolist() == [10, 20, 30]


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (10, 10), 1)
    img.putpalette([255, 255, 255, 40, 50, 60] + [0] * (256 - 2) * 3)
    img.putpixel((0, 0), 0)
    out = decode_image(_write(tmp_path / "pt.png", _pil_bytes(img, transparency=0)))
    assert out[0, 0].tolist() == [0, 0, 0] and out[5, 5].tolist() == [40, 50, 60]


def test_top_down_bmp(tmp_path: Path) -> None:
    """A BMP with negative height stores rows top-down; it must not come out upside down."""
    rgb = _cell(12, 16)  # 16 px * 3 bytes = 48 bytes per row, no row padding
    data = bytearray(_encode(rgb, ".bmp"))
    (offset,) = struct.unpack_from("<I", data, 10)
    rows = np.frombuffer(bytes(data[offset:]), np.uint8).reshape(12, 48)
    data[offset:] = rows[::-1].tobytes()
    struct.pack_into("<i", data, 22, -12)
    assert read_image_size(bytes(data)) == (16, 12)
    np.testing.assert_array_equal(decode_image(_write(tmp_path / "td.bmp", bytes(data))), rgb)


def test_non_ascii_and_space_path(tmp_path: Path) -> None:
    rgb = _cell()
    path = _write(tmp_path / "Zellen Ü" / "ø 細胞" / "cell 1.png", _encode(rgb, ".png"))
    np.testing.assert_array_equal(decode_image(path), rgb)
    np.testing.assert_array_equal(decode_image(str(path)), rgb)
    files, errors = discover([tmp_path / "Zellen Ü"])
    assert errors == []
    assert files == [InputFile(path, "Zellen Ü/ø 細胞")]


# --------------------------------------------------------------------------------------------
# decode_image: bad files
# --------------------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    assert _reason(_write(tmp_path / "empty.bmp", b"")) == "empty file"


def test_truncated_bmp(tmp_path: Path) -> None:
    data = _encode(_cell(64, 64), ".bmp")
    assert _reason(_write(tmp_path / "t.bmp", data[: len(data) // 2])) == "truncated BMP"
    assert _reason(_write(tmp_path / "h.bmp", data[:20])) == "truncated BMP"


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _encode(_cell(64, 64), ".jpg")
    cut = _write(tmp_path / "t.jpg", data[: int(len(data) * 0.6)])
    assert _reason(cut) == "truncated JPEG"


def test_jpeg_that_does_not_decode(tmp_path: Path) -> None:
    data = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"
    assert _reason(_write(tmp_path / "bad.jpg", data)) == "not a valid JPEG"


def _junk(n: int, seed: int = 5) -> bytes:
    """Random bytes without 0xFF, so they hold no JPEG marker."""
    raw = np.random.default_rng(seed).integers(0, 255, n, np.uint8)
    return raw.tobytes()


def test_junk_between_jpeg_markers_is_not_a_valid_jpeg(tmp_path: Path) -> None:
    data = _encode(_cell(64, 64), ".jpg")
    bad = _write(tmp_path / "junk.jpg", data[:2] + _junk(3000) + data[2:])
    assert _reason(bad) == "not a valid JPEG"
    only_junk = _write(tmp_path / "only.jpg", b"\xff\xd8" + _junk(3000) + b"\xff\xd9")
    assert _reason(only_junk) == "not a valid JPEG"


def test_jpeg_junk_libjpeg_skips_decodes_with_note(tmp_path: Path) -> None:
    rgb = _cell(64, 64)
    data = _encode(rgb, ".jpg")
    sof = data.index(b"\xff\xc0")
    path = _write(tmp_path / "pad.jpg", data[:sof] + _junk(300) + data[sof:])
    out = imaging.read_image(path)
    np.testing.assert_array_equal(out.rgb, decode_image(_write(tmp_path / "ok.jpg", data)))
    assert out.notes == ("damaged bytes between JPEG markers skipped",)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_data_after_end_marker_is_ignored_with_note(tmp_path: Path, ext: str) -> None:
    rgb = _cell(64, 64)
    data = _encode(rgb, ext)
    # 2 KiB of appended metadata, with end-marker look-alikes inside it.
    tail = b"\xff\xd9IEND" + np.random.default_rng(1).integers(0, 256, 2042, np.uint8).tobytes()
    path = _write(tmp_path / f"tail{ext}", data + tail)
    expected = decode_image(_write(tmp_path / f"plain{ext}", data))
    out = imaging.read_image(path)
    np.testing.assert_array_equal(out.rgb, expected)
    assert out.notes == ("2 KiB after the end of the image ignored",)
    assert imaging.read_image(tmp_path / f"plain{ext}").notes == ()


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_cut_file_with_end_marker_lookalike_still_truncated(tmp_path: Path, ext: str) -> None:
    """An end marker inside the data (an EXIF thumbnail's EOI, IEND in a text chunk) does not
    make a cut file complete: the walk follows the structure, not the last kilobyte."""
    data = _encode(_cell(128, 128), ext)
    cut = data[: len(data) // 2]
    if ext == ".jpg":
        payload = b"Exif\x00\x00" + b"\xff\xd8" + b"\x00" * 40 + b"\xff\xd9"
        app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        cut = cut[:2] + app1 + cut[2:]
    else:
        text = b"tEXtnote\x00IEND"
        chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
        cut = cut[:33] + chunk + cut[33:]
    kind = "JPEG" if ext == ".jpg" else "PNG"
    assert _reason(_write(tmp_path / f"cut{ext}", cut)) == f"truncated {kind}"


def test_truncated_png(tmp_path: Path) -> None:
    data = _encode(_cell(64, 64), ".png")
    assert _reason(_write(tmp_path / "t.png", data[: len(data) - 30])) == "truncated PNG"


def test_text_renamed_png(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.png", b"Patient 7, slide 2: re-stain tomorrow.\n" * 5)
    assert _reason(path) == "not an image"


def test_random_bytes_jpg(tmp_path: Path) -> None:
    data = b"\x00\x01" + np.random.default_rng(7).integers(0, 256, 5000, np.uint8).tobytes()
    assert _reason(_write(tmp_path / "noise.jpg", data)) == "not an image"


def test_damaged_tiff(tmp_path: Path) -> None:
    data = b"II*\x00\x08\x00\x00\x00" + b"\x00" * 50
    assert _reason(_write(tmp_path / "d.tif", data)) == "damaged or unsupported TIFF file"


def test_one_pixel_image(tmp_path: Path) -> None:
    path = _write(tmp_path / "dot.png", _encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    assert _reason(path) == "too small: 1 x 1 px"
    thin = _write(tmp_path / "thin.png", _encode(np.zeros((100, 7, 3), np.uint8), ".png"))
    assert _reason(thin) == "too small: 7 x 100 px"


def test_huge_png_header_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "huge.png", _png_header_only(40000, 40000))

    def no_decode(*_args: object) -> None:
        raise AssertionError("must not try to decode a 1.6 gigapixel image")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decode)
    assert _reason(path) == "too large: 40000 x 40000 px"


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.bmp", _encode(_cell(20, 30), ".bmp"))
    assert _reason(path, max_pixels=599) == "too large: 30 x 20 px"
    assert decode_image(path, max_pixels=600).shape == (20, 30, 3)


def test_missing_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "gone.png").startswith("cannot be read (")


def test_unreadable_file_chmod(tmp_path: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not block reads (monkeypatched test covers)")
    if os.name == "nt":
        pytest.skip("chmod 000 does not block reads on Windows (monkeypatched test covers)")
    path = _write(tmp_path / "locked.png", _encode(_cell(), ".png"))
    path.chmod(0)
    try:
        assert _reason(path) == "cannot be read (permission denied)"
    finally:
        path.chmod(0o644)


def test_permission_denied_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "locked.png", _encode(_cell(), ".png"))

    def denied(*_args: object, **_kw: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(imaging.os, "open", denied)
    assert _reason(path) == "cannot be read (permission denied)"


def test_other_os_error_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "x.png", _encode(_cell(), ".png"))

    def io_error(*_args: object, **_kw: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(imaging.os, "open", io_error)
    assert _reason(path) == "cannot be read (Input/output error)"


# --------------------------------------------------------------------------------------------
# decode_image: size limits checked from the header, before the file is read whole
# --------------------------------------------------------------------------------------------


def _sparse(path: Path, head: bytes, size: int = 2**31) -> Path:
    """A file of `size` bytes that starts with `head` and takes no disk space."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def _forbid_big_reads(monkeypatch: pytest.MonkeyPatch, limit: int = 2**20) -> list[int]:
    """Make any read of more than `limit` bytes fail; return the sizes asked for."""
    asked: list[int] = []

    def fromfile(*_args: object, **_kw: object) -> None:
        raise AssertionError("the whole file must not be read")

    real_empty = np.empty

    def empty(shape: object, *args: object, **kw: object) -> np.ndarray:
        n = int(np.prod(shape))
        asked.append(n)
        if n > limit:
            raise AssertionError(f"must not allocate {n} bytes for the file")
        return real_empty(shape, *args, **kw)

    monkeypatch.setattr(imaging.np, "fromfile", fromfile)
    monkeypatch.setattr(imaging.np, "empty", empty)
    return asked


def test_sparse_file_claiming_huge_image_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sparse(tmp_path / "huge.png", _png_header_only(40000, 40000))
    _forbid_big_reads(monkeypatch)
    assert _reason(path, max_bytes=2**40) == "too large: 40000 x 40000 px"


def test_file_over_byte_limit_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small, valid header (a 100 x 100 TIFF) followed by 2 GiB of nothing.
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((100, 100), np.uint8))
    path = _sparse(tmp_path / "sparse.tif", buf.getvalue())
    asked = _forbid_big_reads(monkeypatch)
    with pytest.raises(ImageError) as info:
        decode_image(path)
    assert info.value.reason == "too large: 2 GiB file (limit 512 MiB)"
    assert info.value.kind == TOO_LARGE
    assert asked == []
    small = _write(tmp_path / "c.png", _encode(_cell(), ".png"))
    size = small.stat().st_size
    assert _reason(small, max_bytes=100) == f"too large: {size} B file (limit 100 B)"
    assert _reason(small, max_bytes=size - 1).startswith("too large: ")
    assert decode_image(small, max_bytes=size).shape == (32, 32, 3)
    big = _sparse(tmp_path / "big.tif", buf.getvalue(), 3 * 2**30 // 2)
    assert _reason(big, max_bytes=2**30) == "too large: 1.5 GiB file (limit 1 GiB)"


def test_default_byte_limit_is_512_mib() -> None:
    assert imaging.DEFAULT_MAX_BYTES == 512 * 2**20


# --------------------------------------------------------------------------------------------
# decode_image: orientation, pages, special files
# --------------------------------------------------------------------------------------------


def _with_exif_orientation(jpeg: bytes, orientation: int, byteorder: str = "<") -> bytes:
    """`jpeg` with an EXIF APP1 segment whose IFD0 holds only an Orientation tag."""
    mark = b"II" if byteorder == "<" else b"MM"
    entry = struct.pack(byteorder + "HHIHH", 274, 3, 1, orientation, 0)
    tiff = mark + struct.pack(byteorder + "HI", 42, 8) + struct.pack(byteorder + "H", 1)
    tiff += entry + struct.pack(byteorder + "I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_exif_orientation_applied_like_opencv(
    tmp_path: Path, orientation: int, byteorder: str
) -> None:
    rgb = np.zeros((24, 48, 3), np.uint8)
    rgb[:8, :16] = 255  # a white block in the top-left corner as stored
    data = _with_exif_orientation(_encode(rgb, ".jpg"), orientation, byteorder)
    out = imaging.read_image(_write(tmp_path / "o.jpg", data))
    # OpenCV applies EXIF orientation in IMREAD_COLOR mode: the reference for every value.
    ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(out.rgb, ref)
    assert out.rgb.flags["C_CONTIGUOUS"]
    if orientation == 1:
        assert out.notes == ()
    else:
        assert out.notes == (imaging.NOTE_ROTATED,)
    if orientation == 6:  # rotated 90 degrees clockwise: the block is now top-right
        assert out.rgb.shape == (48, 24, 3)
        assert out.rgb[2, -3].min() > 200 and out.rgb[-3, 2].max() < 50


def test_multipage_tiff_first_page_with_note(tmp_path: Path) -> None:
    pages = [np.full((10, 12, 3), v, np.uint8) for v in (11, 22, 33)]
    assert cv2.imwritemulti(str(tmp_path / "multi.tif"), pages)
    out = imaging.read_image(tmp_path / "multi.tif")
    assert out.rgb.shape == (10, 12, 3) and np.all(out.rgb == 11)
    assert out.notes == ("first of 3 pages used",)
    single = _write(tmp_path / "one.tif", _encode(_cell(), ".tif"))
    assert imaging.read_image(single).notes == ()


def test_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    with pytest.raises(ImageError) as info:
        _in_thread(lambda: decode_image(pipe))
    assert info.value.reason == "not a regular file (a pipe), skipped"
    assert info.value.kind == NOT_AN_IMAGE


def _in_thread(fn, timeout: float = 20.0):
    """Run fn in a daemon thread and fail (instead of hanging) if it does not return."""
    import threading

    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked on a special file"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# --------------------------------------------------------------------------------------------
# read_image_size
# --------------------------------------------------------------------------------------------


def test_read_image_size_png_jpeg_bmp() -> None:
    rgb = _cell(21, 34)
    assert read_image_size(_encode(rgb, ".png")) == (34, 21)
    assert read_image_size(_encode(rgb, ".jpg")) == (34, 21)
    assert read_image_size(_encode(rgb, ".bmp")) == (34, 21)
    assert read_image_size(_png_header_only(40000, 40000)) == (40000, 40000)


def test_read_image_size_jpeg_variants() -> None:
    img = Image.fromarray(_cell(21, 34))
    progressive = _pil_bytes(img, "JPEG", progressive=True)
    with_exif = _pil_bytes(img, "JPEG", exif=Image.Exif().tobytes(), icc_profile=b"x" * 3000)
    assert read_image_size(progressive) == (34, 21)
    assert read_image_size(with_exif) == (34, 21)


def test_read_image_size_bmp_core_header() -> None:
    # BITMAPCOREHEADER (OS/2 1.x): 16-bit width and height.
    data = b"BM" + struct.pack("<IHHI", 26 + 12 * 4, 0, 0, 26)
    data += struct.pack("<IHHHH", 12, 300, 200, 1, 24)
    assert read_image_size(data) == (300, 200)


def test_read_image_size_bmp_negative_height() -> None:
    data = bytearray(_encode(_cell(21, 34), ".bmp"))
    struct.pack_into("<i", data, 22, -21)
    assert read_image_size(bytes(data)) == (34, 21)


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_read_image_size_tiff(byteorder: str, bigtiff: bool) -> None:
    out = io.BytesIO()
    tifffile.imwrite(out, _cell(21, 34), photometric="rgb", byteorder=byteorder, bigtiff=bigtiff)
    data = out.getvalue()
    assert data[:2] == (b"II" if byteorder == "<" else b"MM")
    assert read_image_size(data) == (34, 21)


def test_read_image_size_tiff_short_tags() -> None:
    """Big-endian TIFF whose width/length are SHORTs (value left-justified in the field)."""
    entries = [(256, 3, 1, struct.pack(">HH", 640, 0)), (257, 3, 1, struct.pack(">HH", 480, 0))]
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHI", t, ty, n) + v for t, ty, n, v in entries)
    data = b"MM\x00*" + struct.pack(">I", 8) + ifd + b"\x00\x00\x00\x00"
    assert read_image_size(data) == (640, 480)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"BM\x00",
        b"II*\x00\xff\xff\xff\x7f",  # IFD offset beyond the data
        b"GIF89a\x10\x00\x10\x00",
    ],
)
def test_read_image_size_unknown_or_damaged(data: bytes) -> None:
    assert read_image_size(data) is None


# --------------------------------------------------------------------------------------------
# discover
# --------------------------------------------------------------------------------------------


def test_discover_sample_naming(tmp_path: Path) -> None:
    root = tmp_path / "patient7"
    a = _write(root / "a.bmp", b"x")
    b = _write(root / "slide2" / "b.bmp", b"x")
    c = _write(root / "slide2" / "left" / "c.png", b"x")
    files, errors = discover([root])
    assert errors == []
    assert files == [
        InputFile(a, "patient7"),
        InputFile(b, "patient7/slide2"),
        InputFile(c, "patient7/slide2/left"),
    ]


def test_discover_explicit_file_sample_is_parent_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "patient9" / "deep" / "x.png", b"x")
    assert discover([path]) == ([InputFile(path, "deep")], [])
    assert discover([str(path)]) == ([InputFile(path, "deep")], [])


def test_discover_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "patient3" / "x.png", b"x")
    monkeypatch.chdir(tmp_path / "patient3")
    files, _ = discover(["."])
    assert [f.sample for f in files] == ["patient3"]


def test_discover_stable_order(tmp_path: Path) -> None:
    names = ["b.png", "Z.png", "c10.png", "A.png", "c2.png", "sub/x.png", "Sub2/y.png", "a/z.png"]
    for name in reversed(names):  # creation order must not matter
        _write(tmp_path / "root" / name, b"x")
    files, errors = discover([tmp_path / "root"])
    rel = [f.path.relative_to(tmp_path / "root").as_posix() for f in files]
    # Files of a folder first, then its subfolders; case-insensitive natural order.
    expected = ["A.png", "b.png", "c2.png", "c10.png", "Z.png"]
    expected += ["a/z.png", "sub/x.png", "Sub2/y.png"]
    assert errors == [] and rel == expected
    assert discover([tmp_path / "root"]) == (files, errors)


def test_discover_ignores_non_images_in_folders(tmp_path: Path) -> None:
    root = tmp_path / "s"
    good = _write(root / "cell.jpeg", b"x")
    for junk in ["Thumbs.db", "notes.txt", "desktop.ini", "README", "._cell.jpeg", ".hidden.png"]:
        _write(root / junk, b"x")
    _write(root / ".thumbnails" / "t.png", b"x")
    assert discover([root]) == ([InputFile(good, "s")], [])


def test_discover_errors_for_named_inputs(tmp_path: Path) -> None:
    txt = _write(tmp_path / "d" / "notes.TXT", b"x")
    bare = _write(tmp_path / "d" / "README", b"x")
    missing = tmp_path / "d" / "nope.png"
    files, errors = discover([txt, missing, bare])
    assert files == []
    assert errors == [
        FileError(txt, "d", "not a supported image type (.txt)", NOT_AN_IMAGE),
        FileError(missing, "d", "no such file or folder", UNREADABLE),
        FileError(bare, "d", "not a supported image type (no file extension)", NOT_AN_IMAGE),
    ]


def test_discover_duplicates_analyzed_once(tmp_path: Path) -> None:
    root = tmp_path / "p"
    a = _write(root / "a.png", b"x")
    b = _write(root / "b.png", b"x")
    alias = root / "zz-alias.png"
    _symlink(a, alias)
    files, errors = discover([a, root, str(a), tmp_path / "p" / ".." / "p" / "a.png", root])
    assert errors == []
    assert files == [InputFile(a, "p"), InputFile(b, "p")]


def test_discover_symlink_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = _write(root / "a.png", b"x")
    b = _write(root / "sub" / "b.png", b"x")
    _symlink(root, root / "sub" / "loop")
    _symlink(root / "sub", root / "sub" / "self")
    files, errors = discover([root])
    assert files == [InputFile(a, "root"), InputFile(b, "root/sub")]
    assert sorted((e.path.name, e.reason) for e in errors) == [
        ("loop", "folder loop via symbolic link, skipped"),
        ("self", "folder loop via symbolic link, skipped"),
    ]


def test_discover_follows_symlinked_folder(tmp_path: Path) -> None:
    elsewhere = _write(tmp_path / "store" / "c.png", b"x")
    root = tmp_path / "root"
    root.mkdir()
    _symlink(elsewhere.parent, root / "linked")
    files, errors = discover([root])
    assert errors == []
    assert files == [InputFile(root / "linked" / "c.png", "root/linked")]


def test_discover_broken_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good = _write(root / "a.png", b"x")
    _symlink(tmp_path / "gone.png", root / "b.png")
    files, errors = discover([root, tmp_path / "root" / "b.png"])
    assert files == [InputFile(good, "root")]
    assert [e.reason for e in errors] == ["broken symbolic link", "no such file or folder"]


def test_discover_unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    good = _write(root / "a.png", b"x")
    _write(root / "locked" / "b.png", b"x")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if os.path.basename(path) == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(imaging.os, "scandir", scandir)
    files, errors = discover([root])
    assert files == [InputFile(good, "root")]
    assert errors == [
        FileError(
            root / "locked", "root/locked", "folder cannot be read (permission denied)", UNREADABLE
        )
    ]


def test_discover_unreadable_folder_chmod(tmp_path: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not block reads (monkeypatched test covers)")
    if os.name == "nt":
        pytest.skip("chmod does not block folder reads on Windows (monkeypatched test covers)")
    root = tmp_path / "root"
    _write(root / "locked" / "b.png", b"x")
    (root / "locked").chmod(0)
    try:
        files, errors = discover([root])
    finally:
        (root / "locked").chmod(0o755)
    assert files == []
    assert [e.reason for e in errors] == ["folder cannot be read (permission denied)"]


def test_discover_then_decode_mixed_corpus(tmp_path: Path) -> None:
    """Bad files never stop good ones: every found file decodes or gives a plain reason."""
    root = tmp_path / "run"
    _write(root / "1 good.png", _encode(_cell(), ".png"))
    _write(root / "2 empty.bmp", b"")
    _write(root / "3 text.png", b"not really a png")
    _write(root / "4 good.BMP", _encode(_cell(), ".bmp"))
    _write(root / "notes.txt", b"ignored")
    files, errors = discover([root])
    assert errors == []
    outcomes = []
    for f in files:
        try:
            outcomes.append(decode_image(f.path).shape)
        except ImageError as exc:
            outcomes.append(exc.reason)
    assert outcomes == [(32, 32, 3), "empty file", "not an image", (32, 32, 3)]


# --------------------------------------------------------------------------------------------
# to_model_input / thumbnail
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(450, 450), (100, 300), (300, 100), (10, 10)])
@pytest.mark.parametrize("size", [224, 299, 16])
def test_to_model_input_shape_and_dtype(h: int, w: int, size: int) -> None:
    out = to_model_input(np.full((h, w, 3), 200, np.uint8), size)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_to_model_input_keeps_raw_values() -> None:
    rgb = _cell(224, 224)
    out = to_model_input(rgb, 224)
    np.testing.assert_array_equal(out, rgb.astype(np.float32))


def test_wide_image_padded_with_black_bars_top_and_bottom() -> None:
    rgb = np.full((10, 20, 3), (255, 128, 1), np.uint8)
    out = to_model_input(rgb, 20)  # no resize: padding only
    assert np.all(out[:5] == 0) and np.all(out[15:] == 0)
    assert np.all(out[5:15] == (255, 128, 1))


def test_tall_image_padded_with_black_bars_left_and_right() -> None:
    rgb = np.full((300, 100, 3), 255, np.uint8)
    out = to_model_input(rgb, 30)  # downscale by 10: bars are exactly 10 px wide
    assert np.all(out[:, :10] == 0) and np.all(out[:, 20:] == 0)
    assert np.all(out[:, 10:20] == 255)


def test_odd_padding_is_centred() -> None:
    out = to_model_input(np.full((7, 10, 3), 9, np.uint8), 10)
    # 3 rows of padding: 1 on top, 2 below.
    assert np.all(out[0] == 0) and np.all(out[1:8] == 9) and np.all(out[8:] == 0)


def test_thumbnail_is_uint8_and_independent() -> None:
    rgb = np.full((20, 40, 3), 77, np.uint8)
    thumb = thumbnail(rgb, 40)
    assert thumb.dtype == np.uint8 and thumb.shape == (40, 40, 3)
    assert np.all(thumb[:10] == 0) and np.all(thumb[10:30] == 77)
    same = thumbnail(rgb[:20, :20], 20)
    same[...] = 0
    assert np.all(rgb == 77)  # no aliasing with the caller's image
    np.testing.assert_array_equal(thumbnail(rgb, 64), to_model_input(rgb, 64).astype(np.uint8))


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))]
)
def test_to_model_input_rejects_wrong_layout(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        to_model_input(bad, 8)


# --------------------------------------------------------------------------------------------
# Real C-NMC cells (optional data outside the project)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"real C-NMC samples not present at {SAMPLES} (optional data)"
)
def test_real_cnmc_bmps() -> None:
    files, errors = discover([SAMPLES])
    assert errors == [] and len(files) == 6
    assert {f.sample for f in files} == {"cnmc-samples/all", "cnmc-samples/hem"}
    for f in files:
        rgb = decode_image(f.path)
        assert rgb.shape == (450, 450, 3) and rgb.dtype == np.uint8
        assert rgb[0, 0].tolist() == [0, 0, 0]  # segmented cell on black
        assert rgb.max() > 50
        assert to_model_input(rgb, 224).shape == (224, 224, 3)
