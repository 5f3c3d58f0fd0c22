"""Thumbnails with Pillow: geometry, decoding within limits, encoding.

Everything here is synchronous and CPU-bound; the repository runs it in a
thread (:class:`~mxserver.media.repository.MediaRepository`), never on the
reactor thread. Decoding is guarded: only a few raster formats are opened,
and an image whose pixel count exceeds the configured limit is refused from
its header, before any pixel is decoded (decompression bombs).

Geometry follows client-server-api §Thumbnails: ``scale`` keeps the aspect
ratio and fits the requested box; ``crop`` fills the box in its aspect ratio
and cuts the excess from the centre. Thumbnails are never upscaled: content
no larger than the box is served as it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

# Pillow is imported where it is used (in the thumbnailing threads): a server that
# never thumbnails does not carry its ~5 MiB.
if TYPE_CHECKING:
    from PIL import Image

#: Pillow formats we decode (no SVG, PDF, PSD, ... : a small attack surface)
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")

#: content types we try to thumbnail
THUMBNAILABLE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/apng", "image/gif", "image/webp", "image/bmp"}
)

#: client-server-api §Thumbnails: the sizes servers SHOULD produce
PREGENERATED: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"),
    (96, 96, "crop"),
    (320, 240, "scale"),
    (640, 480, "scale"),
    (800, 600, "scale"),
)

#: an animated thumbnail is made only if frames x output pixels stay under this
MAX_ANIMATED_OUTPUT_PIXELS = 40_000_000
#: ... and the source has at most this many frames
MAX_ANIMATED_FRAMES = 300

_EXIF_ORIENTATION = 0x0112


class ThumbnailError(Exception):
    """The content cannot be thumbnailed (not a supported image, or corrupt)."""


class ImageTooLarge(ThumbnailError):
    """The image has more pixels than allowed (``media.max_image_pixels``)."""


@attrs.frozen
class ImageInfo:
    width: int
    height: int
    format: str
    animated: bool


@attrs.frozen
class Thumb:
    data: bytes
    content_type: str
    width: int
    height: int
    method: str
    animated: bool


def _open(data: bytes, max_pixels: int) -> Image.Image:
    from PIL import Image, UnidentifiedImageError
    try:
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge("image has too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ThumbnailError(f"not a supported image: {e}") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ThumbnailError("image has no pixels")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w}x{h}, more than {max_pixels} pixels")
    return im


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    except Exception:
        orientation = None
    # EXIF orientations 5-8 rotate by 90 degrees: width and height swap.
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Size (after EXIF orientation), format and animation of an image, from its header."""
    im = _open(data, max_pixels)
    w, h = _oriented_size(im)
    return ImageInfo(w, h, im.format or "", bool(getattr(im, "is_animated", False)))


def target_size(src_w: int, src_h: int, width: int, height: int, method: str) -> tuple[int, int] | None:
    """The thumbnail's size for a request, or None when the original should be served.

    ``scale``: the largest size with the source's aspect that fits in the box.
    ``crop``: the box itself, or -- for a source smaller than the box in one
    dimension -- the largest region in the box's aspect (never upscaled).
    """
    if src_w <= width and src_h <= height:
        return None
    if method == "scale":
        factor = min(width / src_w, height / src_h)
        return max(1, round(src_w * factor)), max(1, round(src_h * factor))
    if src_w >= width and src_h >= height:
        return width, height
    # One side is already smaller than asked: keep it, cut the other to the box's aspect.
    if src_w * height > src_h * width:
        return max(1, round(src_h * width / height)), src_h
    return src_w, max(1, round(src_w * height / width))


#: resize in two steps (a fast integer reduction, then Lanczos) when shrinking by more than this
_REDUCING_GAP = 3.0


def _resize(frame: Image.Image, tw: int, th: int, method: str) -> Image.Image:
    from PIL import Image
    if method == "scale":
        return frame.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    # crop: the centred region in the box's aspect, resized in the same step
    w, h = frame.size
    if w * th > h * tw:
        cw = h * tw / th
        box = ((w - cw) / 2, 0.0, (w + cw) / 2, float(h))
    else:
        ch = w * th / tw
        box = (0.0, (h - ch) / 2, float(w), (h + ch) / 2)
    return frame.resize((tw, th), Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)


def _static_frame(im: Image.Image) -> Image.Image:
    from PIL import ImageOps
    im.seek(0)
    frame = ImageOps.exif_transpose(im) or im
    if frame.mode not in ("RGB", "RGBA", "L", "LA"):
        frame = frame.convert("RGBA" if _has_alpha(frame) else "RGB")
    return frame


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _encode_static(frame: Image.Image, src_format: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    if src_format == "JPEG":
        frame.convert("RGB").save(out, format="JPEG", quality=80, optimize=True)
        return out.getvalue(), "image/jpeg"
    frame.save(out, format="PNG", optimize=False)
    return out.getvalue(), "image/png"


def _animated(im: Image.Image, tw: int, th: int, method: str) -> bytes | None:
    from PIL import ImageSequence
    n = getattr(im, "n_frames", 1)
    if n > MAX_ANIMATED_FRAMES or n * tw * th > MAX_ANIMATED_OUTPUT_PIXELS:
        return None
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(im):
        durations.append(int(frame.info.get("duration", 100)) or 100)
        frames.append(_resize(frame.convert("RGBA"), tw, th, method))
    out = io.BytesIO()
    # Animated WebP: client-server-api §Thumbnails prefers image/webp for animation.
    frames[0].save(
        out, format="WEBP", save_all=True, append_images=frames[1:], duration=durations,
        loop=int(im.info.get("loop", 0)), quality=80,
    )
    return out.getvalue()


def make_thumbnails(
    data: bytes,
    requests: Iterable[tuple[int, int, str]],
    max_pixels: int,
    animated: bool = False,
    force: bool = False,
) -> list[Thumb]:
    """Thumbnails for each ``(width, height, method)`` request that needs one.

    Requests the source is too small for are skipped (the original serves
    them) unless ``force``, which makes a copy at the source's size; the
    image is decoded once. ``animated`` makes animated WebP
    thumbnails of animated sources where the limits allow, static ones otherwise.
    Raises :class:`ThumbnailError` / :class:`ImageTooLarge`.
    """
    from PIL import Image
    im = _open(data, max_pixels)
    src_w, src_h = _oriented_size(im)
    src_format = im.format or ""
    is_animated = animated and bool(getattr(im, "is_animated", False))
    sizes: list[tuple[int, int, str]] = []
    for width, height, method in requests:
        size = target_size(src_w, src_h, width, height, method)
        if size is None:
            if not force:
                continue
            size = (src_w, src_h)
        if (size[0], size[1], method) not in sizes:
            sizes.append((size[0], size[1], method))
    if not sizes:
        return []
    out: list[Thumb] = []
    try:
        if src_format == "JPEG":
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale: no larger than the biggest thumbnail needs.
            largest = max(max(w, h) for w, h, _ in sizes)
            im.draft("RGB", (largest, largest))
        static: Image.Image | None = None
        for tw, th, method in sizes:
            if is_animated:
                encoded = _animated(im, tw, th, method)
                if encoded is not None:
                    out.append(Thumb(encoded, "image/webp", tw, th, method, True))
                    continue
            if static is None:
                static = _static_frame(im)
            body, ctype = _encode_static(_resize(static, tw, th, method), src_format)
            out.append(Thumb(body, ctype, tw, th, method, False))
    except ThumbnailError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # Truncated or corrupt pixel data shows up only when decoding.
        raise ThumbnailError(f"cannot decode image: {e}") from None
    return out
