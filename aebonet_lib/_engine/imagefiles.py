"""Image files in: read and decode PNG, JPEG, TIFF and DICOM radiographs into gray [0, 1] arrays (chapter 2)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from aebonet_lib.data.preprocess import PreprocessParams, preprocess
from aebonet_lib.errors import AebonetError
from aebonet_lib.options import MAX_PIXELS  # refused above this before decoding: a decompression bomb, or a mistake

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
ORIENTATION_TAG = 0x0112  # EXIF: how the stored pixels turn to stand upright (1: as stored)
HEADER_READERS = ((b"\x89PNG", PngImagePlugin.PngImageFile), (b"\xff\xd8", JpegImagePlugin.JpegImageFile),
                  (b"II*\x00", TiffImagePlugin.TiffImageFile), (b"MM\x00*", TiffImagePlugin.TiffImageFile),
                  (b"II+\x00", TiffImagePlugin.TiffImageFile), (b"MM\x00+", TiffImagePlugin.TiffImageFile))
# EXIF orientation -> the turn that stands the stored pixels upright (as PIL.ImageOps.exif_transpose)
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.T,
           6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T, 8: lambda a: np.rot90(a)}


# ---------------------------------------------------------------- decoding one image

def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a PNG, JPEG, TIFF or DICOM radiograph as float32 (H, W) in [0, 1], bright bone on dark, upright."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AebonetError(f"{path}: cannot read the file ({e.strerror}); check that it exists and is readable") from None
    return decode_image(data, path.name, max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode the bytes of an image file, choosing DICOM or picture decoding by content and name."""
    if not data:
        raise AebonetError(f"{name}: empty file (0 bytes); re-export or remove it")
    if data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIXES):
        return decode_dicom(data, name, max_pixels)
    return decode_picture(data, name, max_pixels)


def decode_picture(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a PNG, JPEG or TIFF (8- or 16-bit, gray, RGB or RGBA) to float32 gray in [0, 1], turned upright."""
    check_complete(data, name)
    width, height, orientation = picture_header(data, name)
    check_pixels(width, height, name, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores EXIF orientation
    if image is None:
        raise AebonetError(undecodable(name))
    return scale_to_unit(upright(to_gray(image), orientation), name)


def undecodable(name: str) -> str:
    """Return the message for a file that is no PNG, JPEG or TIFF this library can decode."""
    return f"{name}: cannot decode the image (damaged, or not a PNG/JPEG/TIFF); re-export or remove it"


def picture_header(data: bytes, name: str) -> tuple[int, int, int]:
    """Return a PNG, JPEG or TIFF's width, height and EXIF orientation, read from its header without decoding pixels."""
    reader = next((reader for magic, reader in HEADER_READERS if data.startswith(magic)), None)
    if reader is None:
        raise AebonetError(undecodable(name))
    try:
        with reader(io.BytesIO(data)) as image:
            width, height = image.size
            return width, height, exif_orientation(image)
    except Exception as e:  # Pillow raises many types for a damaged header
        raise AebonetError(f"{name}: cannot read the image's header ({type(e).__name__}: {e}); "
                           "re-export or remove it") from None


def exif_orientation(image) -> int:
    """Return the EXIF orientation of an opened PNG or JPEG; 1 for a TIFF, which OpenCV already turns upright."""
    if image.format == "JPEG" or (image.format == "PNG" and "exif" in image.info):  # a PNG's getexif() would decode it
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    return 1


def check_pixels(width: int, height: int, name: str, max_pixels: int, frames: int = 1) -> None:
    """Refuse an image with more than `max_pixels` pixels before it is decoded (a decompression bomb, or a mistake)."""
    pixels = width * height * frames
    if pixels > max_pixels:
        size = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
        raise AebonetError(f"{name}: {size} pixels ({pixels / 1e6:.3g} megapixels) is over the limit of "
                           f"{max_pixels / 1e6:g} megapixels that guards against decompression bombs; "
                           f"if the image is genuine, pass --max-pixels {pixels}")


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a gray image stored with an EXIF orientation (1-8) upright; other values leave it as stored."""
    turn = UPRIGHT.get(orientation)
    return image if turn is None else np.ascontiguousarray(turn(image))


def check_complete(data: bytes, name: str) -> None:
    """Raise AebonetError when a PNG or JPEG file stops before its end marker (a truncated download)."""
    if data.startswith(b"\x89PNG") and b"IEND" not in data[-64:]:
        raise AebonetError(f"{name}: truncated PNG (no end marker); download or copy the file again")
    if data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-1024:]:
        raise AebonetError(f"{name}: truncated JPEG (no end marker); download or copy the file again")


def to_gray(image: np.ndarray) -> np.ndarray:
    """Turn an OpenCV BGR or BGRA image into one gray channel (a transparency channel is ignored)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image[:, :, 0]


def scale_to_unit(image: np.ndarray, name: str) -> np.ndarray:
    """Scale 8-bit or 16-bit grey levels to float32 in [0, 1].

    A 16-bit file often holds 10-, 12- or 14-bit detector data; dividing by 65535 would
    leave such an image almost black, so it is divided by the largest value of the
    smallest bit depth (at least 8 bits) that holds its brightest pixel.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.dtype == np.uint16:
        bits = max(8, int(image.max()).bit_length())
        return image.astype(np.float32) / (2 ** bits - 1)
    raise AebonetError(f"{name}: pixel type {image.dtype} not supported; save it as an 8- or 16-bit PNG")


def decode_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a DICOM radiograph: rescale slope and intercept, VOI window, MONOCHROME1 inverted."""
    import pydicom

    check_dicom_pixels(data, name, max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as e:  # pydicom raises many types; any of them means the file cannot be used
        raise AebonetError(f"{name}: cannot decode DICOM pixel data ({type(e).__name__}: {e}); compressed files need "
                           "`pip install pylibjpeg pylibjpeg-libjpeg`, or export the image uncompressed") from None
    pixels = dicom_gray(pixels, ds, name)
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    image = apply_window(pixels, ds)
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":  # 0 means white: flip to bright bone
        image = 1 - image
    return image.astype(np.float32)


def check_dicom_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse a DICOM whose header (Rows, Columns, frames) claims more than `max_pixels` pixels, before decoding."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        rows, columns, frames = (int(ds.get(tag) or 1) for tag in ("Rows", "Columns", "NumberOfFrames"))
    except Exception:  # a header pydicom cannot read: decoding it says why
        return
    check_pixels(columns, rows, name, max_pixels, frames)


def dicom_gray(pixels: np.ndarray, ds, name: str) -> np.ndarray:
    """Return a DICOM's pixels as one 2-D gray image, averaging colour channels."""
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        return pixels.mean(axis=2)
    if pixels.ndim != 2:
        raise AebonetError(f"{name}: DICOM holds an array of shape {pixels.shape} (several frames?); give one 2-D image per file")
    return pixels


def first_value(value) -> float:
    """Return a DICOM number, or the first of several (window tags may hold a list)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def apply_window(pixels: np.ndarray, ds) -> np.ndarray:
    """Map pixel values to [0, 1] through the DICOM VOI window, or the image's own range without one.

    The window (centre c, width w) is the grey range the radiographer chose to show;
    values below it become 0 and above it 1, linearly between, as in DICOM PS3.3 C.11.2.1.2.
    """
    if "WindowCenter" in ds and "WindowWidth" in ds and first_value(ds.WindowWidth) > 1:
        c, w = first_value(ds.WindowCenter), first_value(ds.WindowWidth)
        return np.clip((pixels - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    lo, hi = float(pixels.min()), float(pixels.max())
    return (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)


def image_problem(image: np.ndarray) -> str | None:
    """Return why a decoded image cannot be a radiograph (empty or one flat grey), or None when it can."""
    if image.size == 0:
        return "empty image (0 pixels); re-export or remove it"
    if image.max() == image.min():
        return f"constant image (every pixel is {float(image.min()):.3g}): blank or failed export; re-export or remove it"
    return None


def load_image(path: str | os.PathLike, params: PreprocessParams, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one radiograph and preprocess it like the cache does: float32 (S, S) in [0, 1]."""
    image = read_image(path, max_pixels)
    problem = image_problem(image)
    if problem:
        raise AebonetError(f"{path}: {problem}")
    return preprocess(image, params)


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the sorted list of image files they name."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if is_image_file(p))
        elif path.is_file():
            found.append(path)
        else:
            raise AebonetError(f"{path}: no such file or folder")
    if not found:
        raise AebonetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def is_image_file(path: Path) -> bool:
    """Tell whether a path is a visible image file this library reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


# ---------------------------------------------------------------- label files
