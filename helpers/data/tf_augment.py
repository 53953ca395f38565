"""TensorFlow graph ops for the input pipeline: grey decoding, RLE masks and the augmentation recipe.

Everything here runs inside ``tf.data`` without Python (so it scales with cores and never
needs the GIL); :mod:`helpers.data.augment` is the albumentations counterpart (slower, kept
as an option). An :class:`Augment` recipe (:func:`train_augment`, :func:`eval_augment`) names
the same steps as :func:`helpers.data.augment.train_transforms` / ``eval_transforms``, and
:func:`augment_pair` applies it to a uint8 ``(H, W)`` image and ``(H, W, C)`` masks:

- resize (``resize_to``): area for the image, nearest for masks (OpenCV's ``INTER_NEAREST``
  pixel choice, so masks equal albumentations'; image grey levels can differ by 1 where
  OpenCV and TensorFlow round the area mean differently);
- crop (``crop_size``): zero-padded to the crop size first (centred), then with probability
  ``defect_crop_p`` placed over a defect pixel drawn uniformly among the image's defect
  pixels (any class), as ``CropNonEmptyMaskIfExists``; otherwise (or without defects) uniform;
- horizontal and vertical flips (p=0.5 each);
- affine (p=0.5): shift <= 6.25% of each side, scale 0.9-1.1, rotation <= 10 degrees about
  the centre, bilinear image / nearest masks, constant 0 outside (one isotropic scale; the
  random draws are not albumentations', only their ranges);
- brightness/contrast (p=0.5): ``image * (1 + c) + 255 * b`` with ``b, c`` in +-0.2, image only;
- ``pad_to`` (evaluation): top-left zero pad up to that size.

The image is rounded and clipped to integer grey levels 0..255 (as albumentations' uint8
output); masks stay 0/1. Image and masks go through one geometric transform, so they stay
aligned; during training the C masks travel as the bits of one int32 plane (one flip and one
nearest warp instead of C; up to 31 classes) and are unpacked into float32 at the end. Every
random draw comes from ``tf.random.stateless_*`` ops keyed by a ``(2,)`` int64 seed, so the same
seed gives the same output on any thread.

:func:`augment_runs` is what the pipeline calls: the image still encoded and the masks as RLE
runs; a crop is placed first (its defect pixel found from the run lengths), then only its window
is decoded and rasterised. It gives :func:`augment_pair`'s outputs on the full image and masks
(with ``defect_pixels`` in run order; tested pixel for pixel).

:func:`decode_grey` gives the pixels of :func:`helpers.core.files.read_grey` for JPEG (libjpeg
luma, accurate integer DCT), 8- and 16-bit grey PNG, grey images stored as identical RGB(A)
channels and BMP/GIF; colour pixels use Pillow's ITU-R 601 integer luma. 16-bit *colour* PNGs
can differ by one grey level (Pillow keeps their high byte); TIFF is not decoded here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from helpers.core import checks
from helpers.backend import tf

__all__ = [
    "Augment",
    "TF_SUFFIXES",
    "augment_image",
    "augment_pair",
    "decode_grey",
    "eval_augment",
    "augment_runs",
    "masks_from_runs",
    "rasterise",
    "read_grey",
    "resize_grey",
    "run_pixels",
    "train_augment",
]

TF_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # image files tf.io decodes

_SHIFT, _SCALE, _DEGREES, _BRIGHTNESS, _CONTRAST = 0.0625, 0.1, 10.0, 0.2, 0.2
_MAX_CLASSES = 31  # masks travel packed as the bits of one int32 plane


def _optional_size(name: str, value: Sequence[int] | None) -> tuple[int, int] | None:
    return None if value is None else checks.size(name, value)


@dataclass(frozen=True)
class Augment:
    """An augmentation recipe for :func:`augment_pair` (build it with :func:`train_augment` or :func:`eval_augment`).

    ``random=False`` (evaluation): only ``resize_to`` and ``pad_to``. ``random=True``: resize,
    crop, flips, affine, brightness/contrast as switched on. Sizes are ``(H, W)``.
    """

    random: bool
    resize_to: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    pad_to: tuple[int, int] | None = None
    flips: bool = False
    shift_scale_rotate: bool = False
    brightness_contrast: bool = False
    defect_crop_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("resize_to", "crop_size", "pad_to"):
            object.__setattr__(self, name, _optional_size(name, getattr(self, name)))
        object.__setattr__(self, "defect_crop_p", checks.fraction("defect_crop_p", self.defect_crop_p, one=True))
        if self.random and self.pad_to is not None:
            raise ValueError("pad_to is for evaluation recipes (random=False); training crops or resizes instead")
        if not self.random and (self.crop_size or self.flips or self.shift_scale_rotate or self.brightness_contrast):
            raise ValueError("an evaluation recipe (random=False) has no crop, flips, affine or brightness/contrast")
        if self.resize_to and self.pad_to and (self.pad_to[0] < self.resize_to[0] or self.pad_to[1] < self.resize_to[1]):
            raise ValueError(f"pad_to must be at least resize_to on each side, got resize_to={self.resize_to}, pad_to={self.pad_to}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the output for an ``height x width`` input."""
        if self.resize_to is not None:
            height, width = self.resize_to
        if self.crop_size is not None:
            return self.crop_size
        if self.pad_to is not None:
            return max(height, self.pad_to[0]), max(width, self.pad_to[1])
        return height, width


def train_augment(
    crop_size: Sequence[int] | None = (256, 512),
    resize_to: Sequence[int] | None = None,
    flips: bool = True,
    brightness_contrast: bool = True,
    shift_scale_rotate: bool = True,
    defect_crop_p: float = 0.5,
) -> Augment:
    """The training recipe, arguments as :func:`helpers.data.augment.train_transforms` (seeds come from the pipeline)."""
    return Augment(True, resize_to=resize_to, crop_size=crop_size, flips=bool(flips), shift_scale_rotate=bool(shift_scale_rotate),
                   brightness_contrast=bool(brightness_contrast), defect_crop_p=defect_crop_p)


def eval_augment(resize_to: Sequence[int] | None = None, pad_to: Sequence[int] | None = None) -> Augment:
    """The evaluation recipe, as :func:`helpers.data.augment.eval_transforms`: identity, resize, top-left pad, or both."""
    return Augment(False, resize_to=resize_to, pad_to=pad_to)


# ----------------------------------------------------------------------------- decoding


def _tail_has(data: tf.Tensor, pattern: bytes, window: int = 64) -> tf.Tensor:
    """Whether the last ``window`` bytes of ``data`` hold ``pattern`` (a JPEG EOI / PNG IEND marker)."""
    length = tf.strings.length(data)
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(length - window, 0), window), tf.uint8)
    n = tf.shape(tail)[0] - len(pattern) + 1
    found = tf.ones([tf.maximum(n, 0)], tf.bool)
    for k, byte in enumerate(pattern):
        found &= tf.equal(tail[k:k + tf.maximum(n, 0)], byte)
    return tf.reduce_any(found)


def _luma(rgb: tf.Tensor) -> tf.Tensor:
    """Pillow's ITU-R 601 integer luma of a uint8 ``(H, W, 3)`` image: ``(19595 R + 38470 G + 7471 B + 32768) >> 16``."""
    wide = tf.cast(rgb, tf.int32)
    value = wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 32768
    return tf.cast(tf.bitwise.right_shift(value, 16), tf.uint8)


def _grey_of(image: tf.Tensor) -> tf.Tensor:
    """uint8 ``(H, W)`` grey of a decoded ``(H, W, bands)`` image, as ``read_grey`` converts it (grey or LA: band 0)."""

    def from_colour() -> tf.Tensor:
        rgb = image[..., :3]  # RGBA: alpha dropped, as Pillow's RGBA -> RGB / L
        same = tf.reduce_all(tf.equal(rgb[..., 0], rgb[..., 1])) & tf.reduce_all(tf.equal(rgb[..., 1], rgb[..., 2]))
        return tf.cond(same, lambda: rgb[..., 0], lambda: _luma(rgb))

    return tf.cond(tf.shape(image)[-1] >= 3, from_colour, lambda: image[..., 0])


def _is_png(data: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n")


def _check_bytes(data: tf.Tensor, path: tf.Tensor | str) -> list[tf.Operation]:
    """Asserts that ``data`` is a JPEG/PNG/BMP/GIF file with its end marker (JPEG, PNG), naming ``path``."""
    is_jpeg = tf.io.is_jpeg(data)
    is_png = _is_png(data)
    known = is_jpeg | is_png | tf.equal(tf.strings.substr(data, 0, 2), b"BM") | tf.equal(tf.strings.substr(data, 0, 4), b"GIF8")
    complete = tf.cond(is_jpeg, lambda: _tail_has(data, b"\xff\xd9"),
                       lambda: tf.cond(is_png, lambda: _tail_has(data, b"IEND"), lambda: tf.constant(True)))
    return [
        tf.debugging.Assert(known, ["cannot read image (not JPEG/PNG/BMP/GIF):", path]),
        tf.debugging.Assert(complete, ["corrupt or truncated image (no end marker):", path]),
    ]


def _check_shape(actual: tf.Tensor, shape: tf.Tensor, path: tf.Tensor | str) -> tf.Operation:
    """The Assert that ``actual == shape``; make the image depend on it, or a later shape op may fail first, unnamed."""
    same = tf.reduce_all(tf.equal(tf.cast(actual, tf.int64), tf.cast(shape, tf.int64)))
    return tf.debugging.Assert(same, ["image", path, "is", actual, "(HxW) but its masks are", shape], name="size_check")


def decode_grey(data: tf.Tensor, path: tf.Tensor | str = "") -> tf.Tensor:
    """uint8 ``(H, W)`` grey image of an encoded file's bytes, with :func:`helpers.core.files.read_grey`'s pixels.

    A file that is not JPEG/PNG/BMP/GIF, or a JPEG/PNG without its end marker (truncated), fails
    with ``InvalidArgumentError`` naming ``path``; other damage fails with TensorFlow's decoder error.
    """
    with tf.control_dependencies(_check_bytes(data, path)):
        data = tf.identity(data)

    def jpeg() -> tf.Tensor:
        return tf.io.decode_jpeg(data, channels=1, dct_method="INTEGER_ACCURATE")[..., 0]

    def png() -> tf.Tensor:
        wide = tf.io.decode_png(data, channels=0, dtype=tf.uint16)  # libpng widens 8-bit values to v * 257
        return _grey_of(tf.cast((tf.cast(wide, tf.int32) + 128) // 257, tf.uint8))  # files.sixteen_to_eight_bits

    def other() -> tf.Tensor:  # BMP, GIF
        return _grey_of(tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False))

    image = tf.cond(tf.io.is_jpeg(data), jpeg, lambda: tf.cond(_is_png(data), png, other))
    image.set_shape([None, None])
    return image


def read_grey(data: tf.Tensor, shape: tf.Tensor | None = None, path: tf.Tensor | str = "") -> tf.Tensor:
    """:func:`decode_grey` of ``data``; ``shape = (H, W)``: fail naming ``path`` when the image has another size."""
    image = decode_grey(data, path)
    if shape is None:
        return image
    with tf.control_dependencies([_check_shape(tf.shape(image), shape, path)]):
        return tf.identity(image)


def run_pixels(begins: tf.Tensor, ends: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Every pixel of RLE runs ``[begins, ends)`` (0-based column-major index ``column * H + row``) and its class: two int64 ``(P,)``."""
    pixels = tf.ragged.range(tf.cast(begins, tf.int64), tf.cast(ends, tf.int64))
    return pixels.flat_values, (tf.zeros_like(pixels, tf.int64) + tf.cast(classes, tf.int64)[:, None]).flat_values


def _packed_window(pixels: tf.Tensor, classes: tf.Tensor, height: tf.Tensor,
                   window: tuple[tf.Tensor, tf.Tensor, int | tf.Tensor, int | tf.Tensor]) -> tf.Tensor:
    """int32 ``(h, w)`` plane of the ``window = (y0, x0, h, w)``: bit ``k`` set where class ``k`` is (zero outside the image)."""
    y0, x0, h, w = (tf.cast(v, tf.int64) for v in window)
    height = tf.cast(height, tf.int64)
    rows, columns = pixels % height - y0, pixels // height - x0
    inside = (rows >= 0) & (rows < h) & (columns >= 0) & (columns < w)
    flat = tf.where(inside, rows * w + columns, h * w)  # outside: one spare slot, dropped
    bits = tf.bitwise.left_shift(tf.ones_like(flat, tf.int32), tf.cast(classes, tf.int32))
    plane = tf.scatter_nd(flat[:, None], bits, tf.reshape(h * w + 1, [1]))  # distinct bits add up to their OR
    return tf.reshape(plane[:-1], tf.stack([h, w]))


def _pack(masks: tf.Tensor, n_classes: int) -> tf.Tensor:
    """int32 ``(H, W)`` plane of uint8 0/1 ``masks (H, W, C)``: bit ``k`` = class ``k``."""
    weights = tf.bitwise.left_shift(tf.ones([n_classes], tf.int32), tf.range(n_classes))
    return tf.reduce_sum(tf.cast(masks, tf.int32) * weights, axis=-1)


def _unpack(plane: tf.Tensor, n_classes: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """0/1 ``(H, W, C)`` masks of ``dtype`` from a packed ``(H, W)`` plane (a table look-up for up to 8 classes)."""
    if n_classes <= 8:
        table = ((np.arange(2 ** n_classes)[:, None] >> np.arange(n_classes)) & 1).astype(dtype.as_numpy_dtype)
        return tf.gather(tf.constant(table), plane)
    return tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(plane[..., None], tf.range(n_classes)), 1), dtype)


def _check_classes(n_classes: int) -> None:
    if not 1 <= n_classes <= _MAX_CLASSES:
        raise ValueError(f"the TF engine packs masks as bits of an int32: 1..{_MAX_CLASSES} classes, got {n_classes}")


def rasterise(pixels: tf.Tensor, classes: tf.Tensor, height: tf.Tensor, n_classes: int,
              window: tuple[tf.Tensor, tf.Tensor, int | tf.Tensor, int | tf.Tensor]) -> tf.Tensor:
    """uint8 0/1 masks ``(h, w, C)`` of the ``window = (y0, x0, h, w)`` from run pixels (:func:`run_pixels`) of an image ``height`` rows high.

    The window may reach past the image (zero there, as padding); only run pixels are written,
    so the cost follows the defect area plus the window size.
    """
    return _dense_window(pixels, classes, height, n_classes, window, tf.uint8)


def _dense_window(pixels: tf.Tensor, classes: tf.Tensor, height: tf.Tensor, n_classes: int,
                  window: tuple[tf.Tensor, tf.Tensor, int | tf.Tensor, int | tf.Tensor], dtype: tf.DType) -> tf.Tensor:
    """0/1 ``(h, w, C)`` masks of ``dtype`` of the window, written straight in row-major order (no packing)."""
    y0, x0, h, w = (tf.cast(v, tf.int64) for v in window)
    height = tf.cast(height, tf.int64)
    rows, columns = pixels % height - y0, pixels // height - x0
    inside = (rows >= 0) & (rows < h) & (columns >= 0) & (columns < w)
    size = h * w * n_classes
    flat = tf.where(inside, (rows * w + columns) * n_classes + tf.cast(classes, tf.int64), size)  # outside: a spare slot
    masks = tf.scatter_nd(flat[:, None], tf.ones_like(flat, dtype), tf.reshape(size + 1, [1]))
    return tf.reshape(masks[:-1], tf.stack([h, w, tf.constant(n_classes, tf.int64)]))


def masks_from_runs(begins: tf.Tensor, ends: tf.Tensor, classes: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                    n_classes: int) -> tf.Tensor:
    """uint8 0/1 ``(H, W, C)`` masks from RLE runs: pixels ``[begins, ends)`` (0-based column-major index) of class ``classes``.

    Runs of one class must not overlap (validated RLE, see :func:`helpers.core.rle.parse`).
    """
    pixels, kinds = run_pixels(begins, ends, classes)
    return rasterise(pixels, kinds, height, n_classes, (0, 0, height, width))


# ----------------------------------------------------------------------------- augmentation


def _resize(image: tf.Tensor, plane: tf.Tensor | None, size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Area-resized image ``(h, w)`` (rounded) and nearest-resized mask plane ``(h, w)``, picking pixels as OpenCV does."""
    resized = tf.image.resize(tf.cast(image, tf.float32)[..., None], size, method="area", antialias=False)[..., 0]
    image = tf.cast(tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0), tf.uint8)
    if plane is not None:
        plane = tf.raw_ops.ResizeNearestNeighbor(images=plane[None, ..., None], size=size, align_corners=False,
                                                 half_pixel_centers=False)[0, ..., 0]
    return image, plane


def resize_grey(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 ``(h, w)`` = ``size`` area resize of a uint8 ``(H, W)`` image (rounded half up, as :func:`augment_pair`'s resize).

    An image that already has that size is returned unchanged. Against OpenCV's ``INTER_AREA``
    (the albumentations path) grey levels can differ by 1 where the two round the area mean differently.
    """
    height, width = checks.size("size", size)
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.constant([height, width])))
    resized = tf.cond(same, lambda: tf.identity(image), lambda: _resize(image, None, (height, width))[0])
    return tf.ensure_shape(resized, (height, width))


def augment_image(recipe: Augment, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """:func:`augment_pair` of a uint8 ``(H, W)`` image alone (classification): float32 ``(h, w)`` grey levels."""
    masks = tf.zeros_like(image, tf.uint8)[..., None]
    return augment_pair(recipe, image, masks, seed)[0]


def _pad_bottom_right(values: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """``values (H, W, K)`` zero-padded at the bottom/right to at least ``height x width``."""
    shape = tf.shape(values)
    extra_h, extra_w = tf.maximum(height - shape[0], 0), tf.maximum(width - shape[1], 0)
    return tf.pad(values, [[0, extra_h], [0, extra_w], [0, 0]])


def _crop_origin(shape: tf.Tensor, crop: tuple[int, int], defect_p: float, seed: tf.Tensor, count: tf.Tensor,
                 defect_at: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-left ``(y0, x0)`` of a ``crop`` of an image of (padded) ``shape``.

    With probability ``defect_p`` (when ``count > 0``) the window holds defect pixel number
    ``floor(u * count)``, ``(row, column) = defect_at(number)``, anywhere inside it (as
    ``CropNonEmptyMaskIfExists``); otherwise it is uniform.
    """
    draws = tf.random.stateless_uniform([4], seed)
    room_h, room_w = tf.cast(shape[0], tf.int32) - crop[0], tf.cast(shape[1], tf.int32) - crop[1]
    count = tf.cast(count, tf.int64)

    def over_defect() -> tuple[tf.Tensor, tf.Tensor]:
        pick = tf.minimum(tf.cast(draws[1] * tf.cast(count, tf.float32), tf.int64), count - 1)
        y, x = defect_at(pick)
        dy = tf.minimum(tf.cast(draws[3] * crop[0], tf.int32), crop[0] - 1)
        dx = tf.minimum(tf.cast(draws[2] * crop[1], tf.int32), crop[1] - 1)
        return tf.clip_by_value(tf.cast(y, tf.int32) - dy, 0, room_h), tf.clip_by_value(tf.cast(x, tf.int32) - dx, 0, room_w)

    def anywhere() -> tuple[tf.Tensor, tf.Tensor]:
        y0 = tf.cast(draws[1] * tf.cast(room_h + 1, tf.float32), tf.int32)
        x0 = tf.cast(draws[2] * tf.cast(room_w + 1, tf.float32), tf.int32)
        return tf.minimum(y0, room_h), tf.minimum(x0, room_w)

    return tf.cond((draws[0] < defect_p) & (count > 0), over_defect, anywhere)


def _affine(image: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A random shift-scale-rotate of float ``image (H, W)`` (bilinear) and the packed int32 mask plane ``(H, W)`` (nearest), 0 outside."""
    u = tf.random.stateless_uniform([4], seed, minval=-1.0, maxval=1.0)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    angle = u[0] * _DEGREES * (3.141592653589793 / 180.0)
    scale = 1.0 + u[1] * _SCALE
    shift_x, shift_y = u[2] * _SHIFT * width, u[3] * _SHIFT * height
    centre_x, centre_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # output -> input: p_in = c + R(-angle) / scale (p_out - c - t)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    ox, oy = centre_x + shift_x, centre_y + shift_y
    transform = tf.stack([cos, sin, centre_x - cos * ox - sin * oy, -sin, cos, centre_y + sin * ox - cos * oy, 0.0, 0.0])[None]

    def warp(values: tf.Tensor, interpolation: str) -> tf.Tensor:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=values[None], transforms=transform, output_shape=shape[:2], fill_value=0.0,
            interpolation=interpolation, fill_mode="CONSTANT")[0]

    return warp(image[..., None], "BILINEAR")[..., 0], warp(masks[..., None], "NEAREST")[..., 0]


def _after_crop(recipe: Augment, image: tf.Tensor, plane: tf.Tensor, keys: tf.Tensor, n_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips, affine and brightness/contrast of uint8 ``image (h, w)`` and the packed mask ``plane (h, w)``; float32 out."""
    if recipe.flips:
        flip = tf.random.stateless_uniform([2], keys[1]) < 0.5
        for axis, flipped in ((1, flip[0]), (0, flip[1])):
            image, plane = tf.cond(flipped, lambda: (tf.reverse(image, [axis]), tf.reverse(plane, [axis])), lambda: (image, plane))
    picture = tf.cast(image, tf.float32)
    if recipe.shift_scale_rotate:
        moved = tf.random.stateless_uniform([], keys[2]) < 0.5
        picture, plane = tf.cond(moved, lambda: _affine(picture, plane, keys[3]), lambda: (picture, plane))
    if recipe.brightness_contrast:
        u = tf.random.stateless_uniform([3], keys[4])
        gain = 1.0 + (2.0 * u[1] - 1.0) * _CONTRAST
        offset = (2.0 * u[2] - 1.0) * _BRIGHTNESS * 255.0
        picture = tf.cond(u[0] < 0.5, lambda: tf.clip_by_value(tf.round(picture * gain + offset), 0.0, 255.0), lambda: picture)
    return tf.clip_by_value(tf.round(picture), 0.0, 255.0), _unpack(plane, n_classes)


def _keys(seed: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)  # crop, flips, affine p, affine, brightness


def _window(image: tf.Tensor, y0: tf.Tensor, x0: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """The ``h x w`` window at ``(y0, x0)`` of ``image (H, W)`` (or ``(H, W, K)``); zero where it leaves the image (y0, x0 may be < 0)."""
    shape = tf.shape(image)
    top, left = tf.maximum(-y0, 0), tf.maximum(-x0, 0)
    y1, x1 = tf.maximum(y0, 0), tf.maximum(x0, 0)
    inner_h, inner_w = tf.minimum(h - top, shape[0] - y1), tf.minimum(w - left, shape[1] - x1)
    pads = [[top, h - top - inner_h], [left, w - left - inner_w]] + [[0, 0]] * (len(image.shape) - 2)
    return tf.pad(image[y1:y1 + inner_h, x1:x1 + inner_w], pads)


def _centred_pad(height: tf.Tensor, width: tf.Tensor, crop: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """PadIfNeeded's ``(top, left)`` zero padding up to ``crop`` (centred) and the padded ``(H, W)``."""
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    top, left = tf.maximum(crop[0] - height, 0) // 2, tf.maximum(crop[1] - width, 0) // 2
    return top, left, tf.stack([tf.maximum(height, crop[0]), tf.maximum(width, crop[1])])


def augment_pair(recipe: Augment, image: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor,
                 defect_pixels: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply ``recipe`` to uint8 ``image (H, W)`` and ``masks (H, W, C)``: float32 ``(h, w)`` grey levels and float32 0/1 ``(h, w, C)``.

    ``seed``: ``(2,)`` int64 key of every random draw (ignored by evaluation recipes). The defect
    crop draws among the pixels where any mask is set (row-major order), or among
    ``defect_pixels``: column-major indices ``column * H + row`` in RLE run order, as
    :func:`run_pixels` gives them (a pixel of two classes is listed twice). Ignored after ``resize_to``.
    """
    n_classes = int(masks.shape[-1])
    if not recipe.random:  # resize / pad the dense masks: no packing
        if recipe.resize_to is not None:
            image = _resize(image, None, recipe.resize_to)[0]
            masks = tf.raw_ops.ResizeNearestNeighbor(images=masks[None], size=recipe.resize_to, align_corners=False,
                                                     half_pixel_centers=False)[0]
        if recipe.pad_to is not None:
            image = _pad_bottom_right(image[..., None], *recipe.pad_to)[..., 0]
            masks = _pad_bottom_right(masks, *recipe.pad_to)
        return tf.cast(image, tf.float32), tf.cast(masks, tf.float32)
    _check_classes(n_classes)
    plane = _pack(masks, n_classes)
    if recipe.resize_to is not None:
        image, plane = _resize(image, plane, recipe.resize_to)
        defect_pixels = None
    keys = _keys(seed)
    if recipe.crop_size is not None:
        shape = tf.shape(image)
        top, left, padded = _centred_pad(shape[0], shape[1], recipe.crop_size)
        height, offset = tf.cast(shape[0], tf.int64), tf.cast(tf.stack([top, left]), tf.int64)
        if defect_pixels is None:
            found = tf.where(plane > 0)  # (n, 2) rows and columns, row-major
        else:
            pixels = tf.cast(defect_pixels, tf.int64)
            found = tf.stack([pixels % height, pixels // height], axis=1)
        count = tf.shape(found, out_type=tf.int64)[0]

        def defect_at(number: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return found[number, 0] + offset[0], found[number, 1] + offset[1]

        y0, x0 = _crop_origin(padded, recipe.crop_size, recipe.defect_crop_p, keys[0], count, defect_at)
        image = _window(image, y0 - top, x0 - left, *recipe.crop_size)
        plane = _window(plane, y0 - top, x0 - left, *recipe.crop_size)
    return _after_crop(recipe, image, plane, keys, n_classes)


def _run_pixel(begins: tf.Tensor, ends: tf.Tensor, number: tf.Tensor) -> tf.Tensor:
    """Column-major index of pixel ``number`` of the runs ``[begins, ends)`` in order, without listing them all."""
    lengths = tf.cast(ends - begins, tf.int64)
    before = tf.cumsum(lengths, exclusive=True)
    run = tf.searchsorted(tf.cumsum(lengths), tf.reshape(number, [1]), side="right")[0]
    return tf.cast(begins[run], tf.int64) + number - before[run]


def augment_runs(recipe: Augment, image: tf.Tensor, shape: tf.Tensor, begins: tf.Tensor, ends: tf.Tensor, classes: tf.Tensor,
                 n_classes: int, seed: tf.Tensor, path: tf.Tensor | str = "") -> tuple[tf.Tensor, tf.Tensor]:
    """:func:`augment_pair` for an image given as encoded bytes (or decoded uint8 ``(H, W)``) and masks as RLE runs.

    ``shape = (H, W)`` of the image (checked, failing naming ``path``); ``begins``, ``ends``,
    ``classes``: its runs (0-based column-major ``[begin, end)``, class position). A crop without
    resize is placed first (its defect pixel found from the run lengths), then only its window is
    decoded (JPEG: ``decode_and_crop_jpeg``) and only the runs that reach it are rasterised: the
    same outputs as :func:`augment_pair` on the full image and masks with
    ``defect_pixels=run_pixels(...)[0]``, for a fraction of the work.
    """
    _check_classes(n_classes)
    encoded = image.dtype == tf.string
    height, width = tf.cast(shape[0], tf.int32), tf.cast(shape[1], tf.int32)
    if recipe.crop_size is None or recipe.resize_to is not None:
        full = read_grey(image, shape, path) if encoded else image
        pixels, kinds = run_pixels(begins, ends, classes)
        masks = _dense_window(pixels, kinds, height, n_classes, (0, 0, height, width), tf.float32 if not recipe.random else tf.uint8)
        return augment_pair(recipe, full, masks, seed, defect_pixels=pixels)
    keys = _keys(seed)
    ch, cw = recipe.crop_size
    top, left, padded = _centred_pad(height, width, recipe.crop_size)
    rows = tf.cast(height, tf.int64)

    def defect_at(number: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixel = _run_pixel(begins, ends, number)
        return pixel % rows + tf.cast(top, tf.int64), pixel // rows + tf.cast(left, tf.int64)

    count = tf.reduce_sum(tf.cast(ends - begins, tf.int64))
    y0, x0 = _crop_origin(padded, recipe.crop_size, recipe.defect_crop_p, keys[0], count, defect_at)
    y0, x0 = y0 - top, x0 - left  # window in image coordinates (< 0 or past the end: padding)
    # only the runs that reach the window's columns, clipped to them, are expanded to pixels
    first, last = tf.cast(tf.maximum(x0, 0), tf.int64) * rows, tf.cast(tf.maximum(x0 + cw, 0), tf.int64) * rows
    clipped_begins, clipped_ends = tf.maximum(tf.cast(begins, tf.int64), first), tf.minimum(tf.cast(ends, tf.int64), last)
    keep = clipped_ends > clipped_begins
    pixels, kinds = run_pixels(tf.boolean_mask(clipped_begins, keep), tf.boolean_mask(clipped_ends, keep), tf.boolean_mask(classes, keep))
    plane = _packed_window(pixels, kinds, height, (y0, x0, ch, cw))
    if encoded:
        fits = (top == 0) & (left == 0)
        picture = tf.cond(fits & tf.io.is_jpeg(image), lambda: _jpeg_window(image, shape, path, y0, x0, ch, cw),
                          lambda: _window(read_grey(image, shape, path), y0, x0, ch, cw))
    else:
        picture = _window(image, y0, x0, ch, cw)
    picture = tf.ensure_shape(picture, (ch, cw))
    return _after_crop(recipe, picture, plane, keys, n_classes)


def _jpeg_window(data: tf.Tensor, shape: tf.Tensor, path: tf.Tensor | str, y0: tf.Tensor, x0: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """uint8 ``(h, w)`` window of a JPEG decoded alone (same pixels as decoding all of it), its header size checked against ``shape``."""
    checked = [*_check_bytes(data, path), _check_shape(tf.io.extract_jpeg_shape(data)[:2], shape, path)]
    with tf.control_dependencies(checked):
        window = tf.image.decode_and_crop_jpeg(data, tf.stack([y0, x0, h, w]), channels=1, dct_method="INTEGER_ACCURATE")
    return window[..., 0]
