"""Image I/O: every file the engine reads or writes goes through here.

Images inside the engine are float32 tensors of shape (3, H, W), sRGB, values in [0, 1].
OpenEXR files (the ``exr`` extra) are scene-referred: they come in through an OCIO view and go
out through its inverse (``_plate``), so the same tensors serve them.

Reading validates at the boundary (missing file, directory, empty or truncated data, unknown
format, too many pixels), applies EXIF orientation, converts an embedded ICC profile to sRGB and
flattens any alpha channel onto white. Writing is atomic (a temporary file in the target folder,
then a rename), never replaces an existing file unless asked, and embeds the render's parameters
as JSON so a render can be reproduced from its output.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

from ._errors import ImageError, InputError, OutputError
from ._exr import read_exr_metadata
from ._files import atomic_write, cache_dir, probe_writable
from ._plate import Plate, encode_display_exr, read_plate
from ._values import DEFAULT_MAX_PIXELS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "check_output_path",
    "METADATA_KEY",
    "OUTPUT_FORMATS",
    "load_image",
    "read_metadata",
    "resize_to",
    "resize_long_side",
    "same_file_role",
    "save_image",
]

#: Key of the PNG text chunk that holds the render parameters (JSON).
METADATA_KEY = "styleforge"

#: Output suffix -> (Pillow format, allowed bit depths).
OUTPUT_FORMATS = {
    ".png": ("PNG", (8, 16)),
    ".jpg": ("JPEG", (8,)),
    ".jpeg": ("JPEG", (8,)),
    ".tif": ("TIFF", (8,)),
    ".tiff": ("TIFF", (8,)),
    # 16: half, 32: float; 8 (every format's default) keeps an EXR plate's type, else half.
    ".exr": ("EXR", (8, 16, 32)),
}

_TIFF_IMAGE_DESCRIPTION = 270
_SRGB = ImageCms.createProfile("sRGB")


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, colorspace: str | None = None,
               view: str | None = None, alpha: str = "white") -> torch.Tensor:
    """Read an image file as a float32 tensor (3, H, W) in sRGB, values in [0, 1].

    Accepts PNG, JPEG, TIFF, WebP and BMP (and the other formats Pillow decodes) in greyscale,
    palette, RGB(A), CMYK and 16-bit greyscale modes. 16-bit RGB files are decoded by Pillow at
    8-bit precision. An alpha channel is flattened onto white (``alpha="white"``), or, for a
    semantic map (``alpha="map"``), says only where something is painted: a pixel with any
    opacity keeps its colour as painted, unblended, and a fully transparent one is white.
    An OpenEXR file is read in ``colorspace`` (default: the OCIO config's scene_linear) and shown
    through ``view`` (``read_plate``; its alpha is not applied). Raises ImageError naming the file
    and the reason for anything unusable.
    """
    if alpha not in ("white", "map"):
        raise ValueError(f"alpha must be 'white' or 'map', got {alpha!r}")
    path = Path(path)
    if path.suffix.lower() == ".exr":
        return read_plate(path, colorspace=colorspace, view=view, max_pixels=max_pixels).display
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")

    # Pillow's own bomb guard uses a global threshold; ours is per call, so switch Pillow's off
    # while we check the header's size ourselves before any pixel is decoded.
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width == 0 or height == 0:
                raise ImageError(path, f"zero-size image ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    path,
                    f"{width}x{height} is {width * height:,} pixels, more than the limit of "
                    f"{max_pixels:,} (raise max_pixels if this file is trusted)",
                )
            image.load()
            array = _to_rgb_array(path, image, alpha)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image, or a format that cannot be decoded") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as error:
        raise ImageError(path, f"truncated or corrupt image data ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb_array(path: Path, image: Image.Image, alpha_mode: str = "white") -> np.ndarray:
    """Decoded Pillow image -> float32 (H, W, 3) sRGB array in [0, 1]."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        grey = np.clip(grey / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)

    icc = image.info.get("icc_profile")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if icc:
        image = _icc_to_srgb(path, image, icc, has_alpha)
    image = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    if has_alpha:
        rgb, alpha = array[:, :, :3], array[:, :, 3:]
        if alpha_mode == "map":  # a region's colour, however transparent its brush: never a blend with white
            array = np.where(alpha > 0, rgb, 1.0)
        else:  # flatten onto white: a painting's transparent margin reads as blank canvas, not black
            array = rgb * alpha + (1.0 - alpha)
    return np.ascontiguousarray(array)


def _icc_to_srgb(path: Path, image: Image.Image, icc: bytes, has_alpha: bool) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if image.mode in ("RGBA", "LA") else "RGB"
        if image.mode == "LA":
            image = image.convert("RGBA")
        # profileToProfile returns None only when it converts in place (inPlace=True), never here.
        return cast(Image.Image, ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode))
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        raise ImageError(path, f"embedded ICC profile cannot be applied ({error})") from None


def resize_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (..., 3, H, W) to (height, width): antialiased bicubic, clamped to [0, 1]."""
    squeeze = image.dim() == 3
    batch = image[None] if squeeze else image
    if batch.shape[-2:] != (height, width):
        batch = F.interpolate(
            batch, size=(height, width), mode="bicubic", align_corners=False, antialias=True
        ).clamp_(0.0, 1.0)
    return batch[0] if squeeze else batch


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (..., 3, H, W) so that max(H, W) == long_side, keeping the aspect ratio."""
    height, width = image.shape[-2:]
    scale = long_side / max(height, width)
    return resize_to(image, max(1, round(height * scale)), max(1, round(width * scale)))


def check_output_path(path: str | os.PathLike, *, bit_depth: int = 8, overwrite: bool = False,
                      inputs: Mapping[str, str | os.PathLike] | None = None, image: bool = True,
                      probe: bool = True, make_folders: bool = False) -> Path:
    """Refuse an output path before any work: unknown format or bit depth (``image``), a folder,
    an existing file (unless ``overwrite``), one of the render's ``inputs`` (role -> path, compared
    through symlinks: never written over, even with ``overwrite``), a missing folder (unless
    ``make_folders``: the caller makes it), or (``probe``) a folder where no file can be created:
    a temporary file is created and removed there (or in the nearest existing folder above), after
    clearing the temporaries a killed save of this path left. Returns the path."""
    path = Path(path)
    if image:
        _check_format(path, bit_depth)
    try:
        if path.is_dir():
            raise ImageError(path, "is a directory; give an output file name")
        role = same_file_role(path, inputs or {})
        if role is not None:
            raise ImageError(path, f"is also an input ({role}); choose another output")
        if path.is_symlink() and not path.exists() and not overwrite:
            # The final write links its file into place and would meet the link only then, after
            # the whole render: a link to nothing is refused here, before any work.
            raise ImageError(path, f"is a link to nothing ({os.readlink(path)}); pass --overwrite to replace the "
                                   "link, or remove it")
        if path.exists() and not overwrite:
            raise ImageError(path, "output exists; pass --overwrite to replace it")
        if not make_folders and not path.parent.is_dir():
            raise ImageError(path, f"output folder {path.parent} does not exist")
        if probe:
            probe_writable(path)
    except OSError as error:
        raise ImageError(path, f"cannot write there ({error.strerror or error})") from None
    return path


def _check_format(path: Path, bit_depth: int) -> str:
    """The Pillow format of an output path, or ImageError for a suffix or bit depth it cannot take."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ImageError(path, f"unsupported output format {suffix or '(none)'}; use {', '.join(OUTPUT_FORMATS)}")
    fmt, depths = OUTPUT_FORMATS[suffix]
    if bit_depth not in depths:
        raise ImageError(path, f"{fmt} output supports bit depth {', '.join(map(str, depths))}, not {bit_depth}")
    return fmt


def same_file_role(path: str | os.PathLike, inputs: Mapping[str, str | os.PathLike]) -> str | None:
    """The role of the input that ``path`` is (resolved through symlinks, or the same file by
    another name), or None."""
    target = Path(path).resolve()
    for role, source in inputs.items():
        other = Path(source)
        if other.resolve() == target or (target.exists() and other.exists() and os.path.samefile(target, other)):
            return role
    return None


def save_image(
    image: torch.Tensor,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, object] | None = None,
    bit_depth: int = 8,
    quality: int = 95,
    overwrite: bool = False,
    recover: bool = False,
    make_folders: bool = False,
    plate: Plate | None = None,
    colorspace: str | None = None,
    view: str | None = None,
) -> Path:
    """Write a (3, H, W) image in [0, 1] atomically as PNG (8/16-bit), JPEG, TIFF or EXR.

    ``metadata`` is embedded as JSON: a PNG text chunk named "styleforge", the TIFF
    ImageDescription, or the JPEG comment. An existing file raises ImageError unless
    ``overwrite``; a failure leaves neither a partial output nor a temporary file behind.
    ``recover``: if the file cannot be written (a full disk, a folder gone or locked, a name
    taken meanwhile), the image is kept in ``<cache>/recovered/`` and OutputError says where.
    ``make_folders``: a missing output folder is made (only now, when there is an image to write).
    EXR (half, or float with ``bit_depth`` 32) holds scene values: the render of ``plate`` goes
    back into its colour space (or ``colorspace``) with its alpha, windows and compression
    (``Plate.encode``); without a plate, the inverse of ``view`` into ``colorspace``. The
    metadata is the header's string attribute "styleforge".
    """
    path = Path(path)
    fmt = _check_format(path, bit_depth)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ImageError(path, "refusing to write an image containing NaN or Inf")

    text = json.dumps(dict(metadata), sort_keys=True, default=str) if metadata is not None else None
    if fmt == "EXR":
        data = _encode_exr(image, bit_depth, text, plate, colorspace, view)
    else:
        hwc = image.detach().to("cpu", torch.float64).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
        data = _encode(hwc, fmt, bit_depth, quality, text)

    try:
        check_output_path(path, bit_depth=bit_depth, overwrite=overwrite, probe=False, make_folders=make_folders)
        if make_folders:
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, replace=overwrite,
                     exists_error=lambda: ImageError(path, "output exists; pass --overwrite to replace it"))
    except (ImageError, OSError) as error:
        if not recover:
            raise
        reason = error.reason if isinstance(error, ImageError) else (error.strerror or str(error))
        raise OutputError(path, reason, _keep_elsewhere(path, data)) from None
    return path


def _keep_elsewhere(path: Path, data: bytes) -> Path | None:
    """Write ``data`` to ``<cache>/recovered/NAME`` (or NAME-TIMESTAMP when taken); None if even
    that fails."""
    try:
        folder = cache_dir() / "recovered"
    except InputError:  # a cache that is a file: the image cannot be kept there either
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (path.name, f"{path.stem}-{stamp}-{os.getpid()}{path.suffix}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return atomic_write(folder / name, data, replace=False)
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def _encode_exr(image: torch.Tensor, bit_depth: int, text: str | None, plate: Plate | None,
                colorspace: str | None, view: str | None) -> bytes:
    pixel_type = {16: "half", 32: "float"}.get(bit_depth)
    attributes = {METADATA_KEY: text} if text is not None else None
    if plate is not None:
        return plate.encode(image, colorspace=colorspace, pixel_type=pixel_type, attributes=attributes)
    return encode_display_exr(image, colorspace=colorspace, view=view, pixel_type=pixel_type or "half",
                              attributes=attributes)


def _encode(hwc: np.ndarray, fmt: str, bit_depth: int, quality: int, text: str | None) -> bytes:
    if bit_depth == 16:
        return _encode_png16(hwc, text)
    pixels = Image.fromarray(np.round(hwc * 255.0).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    extra: dict[str, object]
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if text is not None:
            info.add_itxt(METADATA_KEY, text, zip=True)
        pixels.save(buffer, "PNG", pnginfo=info)
    elif fmt == "JPEG":
        extra = {"comment": text.encode()} if text is not None else {}
        pixels.save(buffer, "JPEG", quality=quality, subsampling=0, **extra)
    else:
        extra = {"tiffinfo": {_TIFF_IMAGE_DESCRIPTION: text}} if text is not None else {}
        pixels.save(buffer, "TIFF", compression="tiff_deflate", **extra)
    return buffer.getvalue()


def _encode_png16(hwc: np.ndarray, text: str | None) -> bytes:
    """16-bit RGB PNG, written directly: Pillow has no 16-bit RGB mode to save from."""
    height, width, _ = hwc.shape
    samples = np.round(hwc * 65535.0).astype(">u2").reshape(height, width * 3)
    rows = np.zeros((height, 1 + width * 6), dtype=np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = samples.view(np.uint8).reshape(height, width * 6)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))]
    if text is not None:
        # iTXt: keyword, null, compression flag 1, method 0, empty language and translated keyword.
        payload = METADATA_KEY.encode() + b"\x00\x01\x00\x00\x00" + zlib.compress(text.encode("utf-8"))
        parts.append(chunk(b"iTXt", payload))
    parts.append(chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The render parameters embedded by save_image, or None when the file carries none."""
    path = Path(path)
    if path.suffix.lower() == ".exr":
        return read_exr_metadata(path, METADATA_KEY)
    try:
        with Image.open(path) as image:
            if isinstance(image, PngImagePlugin.PngImageFile):
                text = image.text.get(METADATA_KEY)
            elif isinstance(image, TiffImagePlugin.TiffImageFile):
                text = image.tag_v2.get(_TIFF_IMAGE_DESCRIPTION)
            else:
                comment = image.info.get("comment")
                text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
    except (OSError, UnidentifiedImageError) as error:
        raise ImageError(path, f"cannot read metadata ({error})") from None
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
