"""Per-image transcriptions of the CIFAR-10-C generation script's formulas (make_cifar_c.py), written
with the libraries it calls (scikit-image, scipy, OpenCV, PIL; ImageMagick's motion blur through
imagecorruptions' numpy port of it). Each takes one uint8 (H, W, 3) image and the random draws the
batched version drew for it, and returns floats in [0, 255] as the script does."""

from __future__ import annotations

import io

import cv2
import numpy as np
import skimage as sk
from imagecorruptions.corruptions import _motion_blur
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian


def clipped_zoom(img, factor):
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


def gaussian_noise(x, c, noise):
    return np.clip(x / 255 + noise * c, 0, 1) * 255


def impulse_noise(x, amount, u_flip, u_salt):
    out = x / 255
    flipped, salted = u_flip < amount, u_salt < 0.5
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return out * 255


def speckle_noise(x, c, noise):
    x = x / 255
    return np.clip(x + x * noise * c, 0, 1) * 255


def gaussian_blur(x, sigma):
    return np.clip(gaussian(x / 255, sigma=sigma, channel_axis=-1), 0, 1) * 255


def glass_blur(x, sigma, d, iterations, offsets, eps=0.0):
    x = np.uint8(gaussian(x / 255, sigma=sigma, channel_axis=-1) * 255 + eps)
    k = 0
    for it in range(iterations):
        k = 0
        for h in range(32 - d, d, -1):
            for w in range(32 - d, d, -1):
                dx, dy = offsets[it, k]
                k += 1
                hp, wp = h + dy, w + dx
                x[h, w], x[hp, wp] = x[hp, wp], x[h, w]  # as written (numpy views make it a copy)
    return np.clip(gaussian(x / 255, sigma=sigma, channel_axis=-1), 0, 1) * 255


def disk(radius, alias_blur):
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=(3, 3), sigmaX=alias_blur)


def defocus_blur(x, radius, alias_blur):
    x = x / 255
    kernel = disk(radius, alias_blur)
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], -1)
    return np.clip(out, 0, 1) * 255


def motion_blur(x, radius, sigma, angle):
    return np.round(np.clip(_motion_blur(x.astype(np.float64), radius, sigma, angle), 0, 255))  # PNG: 8 bits


def zoom_blur(x, factors):
    x = (x / 255).astype(np.float32)
    out = np.zeros_like(x)
    for f in factors:
        out += clipped_zoom(x, f)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def snow(x, c, layer, angle):
    x = np.array(x, dtype=np.float32) / 255
    layer = clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    layer = np.round(np.clip(_motion_blur(layer.astype(np.float64), c[4], c[5], angle), 0, 255)) / 255
    layer = layer[..., None]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(32, 32, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x, c, photo_path, u_corner):
    photo = cv2.resize(cv2.imread(photo_path), (0, 0), fx=0.2, fy=0.2)
    top, left = int(u_corner[0] * (photo.shape[0] - 32)), int(u_corner[1] * (photo.shape[1] - 32))
    photo = photo[top:top + 32, left:left + 32][..., [2, 1, 0]]
    return np.clip(c[0] * x.astype(np.float64) + c[1] * photo, 0, 255)


def plasma_fractal(decay, uniforms, mapsize=32):
    """The script's diamond-square; ``uniforms`` yields its U(-1, 1) draws in order."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        return array / 4 + wibble * (next(uniforms) * wibble)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(
            (dr + np.roll(dr, 1, axis=0)) + (ul + np.roll(ul, -1, axis=1)))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(
            (dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=0)))
        stepsize //= 2
        wibble /= decay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, strength, decay, uniforms):
    x = x / 255
    top = x.max()
    x = x + strength * plasma_fractal(decay, uniforms)[:32, :32][..., None]
    return np.clip(x * top / (top + strength), 0, 1) * 255


def brightness(x, c):
    hsv = sk.color.rgb2hsv(x / 255)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(sk.color.hsv2rgb(hsv), 0, 1) * 255


def contrast(x, c):
    x = x / 255
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def saturate(x, c):
    hsv = sk.color.rgb2hsv(x / 255)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(sk.color.hsv2rgb(hsv), 0, 1) * 255


def elastic_transform(image, c, u_affine, u_dx, u_dy):
    image = np.array(image, dtype=np.float32) / 255
    shape = image.shape
    centre, size = np.float32(shape[:2]) // 2, min(shape[:2]) // 3
    pts1 = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    pts2 = pts1 + (u_affine * c[2]).astype(np.float32)
    m = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, m, shape[:2][::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = gaussian(u_dx, c[1], mode="reflect", truncate=3) * c[0]
    dy = gaussian(u_dy, c[1], mode="reflect", truncate=3) * c[0]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (np.reshape(y + dy[..., None], (-1, 1)), np.reshape(x + dx[..., None], (-1, 1)),
               np.reshape(z, (-1, 1)))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def pixelate(x, c):
    img = Image.fromarray(x)
    img = img.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX)
    return np.asarray(img).astype(np.float64)


def jpeg_compression(x, quality):
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer)).astype(np.float64)


def spatter(x, c, noise):
    x = np.array(x, dtype=np.float32) / 255
    liquid = noise * c[1] + c[0]
    liquid = gaussian(liquid, sigma=c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate([v / 255 * np.ones_like(m[..., :1]) for v in (175, 238, 238)], axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = np.where(liquid > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.concatenate([v / 255 * np.ones_like(x[..., :1]) for v in (63, 42, 20)], axis=2)
    return np.clip(x * (1 - m[..., None]) + color * m[..., None], 0, 1) * 255


def script(name: str, x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The whole per-image computation of one corruption, numpy random draws included (the baseline
    of benchmarks/corruptions.py): uint8 (32, 32, 3) in, uint8 out."""
    import importlib.util
    from pathlib import Path

    from igdefense.corruptions import blur, digital, noise, weather

    s = severity - 1
    if name == "gaussian_noise":
        out = gaussian_noise(x, noise.GAUSSIAN[s], rng.normal(size=x.shape))
    elif name == "shot_noise":
        out = np.clip(rng.poisson(x / 255 * noise.SHOT[s]) / noise.SHOT[s], 0, 1) * 255
    elif name == "impulse_noise":
        out = impulse_noise(x, noise.IMPULSE[s], rng.random(x.shape), rng.random(x.shape))
    elif name == "speckle_noise":
        out = speckle_noise(x, noise.SPECKLE[s], rng.normal(size=x.shape))
    elif name == "gaussian_blur":
        out = gaussian_blur(x, blur.GAUSSIAN[s])
    elif name == "glass_blur":
        sigma, d, iterations = blur.GLASS[s]
        out = glass_blur(x.copy(), sigma, d, iterations, rng.integers(-d, d, (iterations, (32 - 2 * d) ** 2, 2)))
    elif name == "defocus_blur":
        out = defocus_blur(x, *blur.DEFOCUS[s])
    elif name == "motion_blur":
        out = motion_blur(x, *blur.MOTION[s], rng.uniform(-45, 45))
    elif name == "zoom_blur":
        out = zoom_blur(x, blur.ZOOM[s])
    elif name == "snow":
        c = weather.SNOW[s]
        out = snow(x, c, rng.normal(c[0], c[1], (32, 32)), rng.uniform(-135, -45))
    elif name == "frost":
        folder = Path(list(importlib.util.find_spec("imagecorruptions").submodule_search_locations)[0]) / "frost"
        out = frost(x, weather.FROST[s], str(folder / weather.FROST_FILES[rng.integers(5)]), rng.random(2))
    elif name == "fog":
        strength, decay = weather.FOG[s]
        out = fog(x, strength, decay, _uniforms(rng))
    elif name == "spatter":
        out = spatter(x, weather.SPATTER[s], rng.normal(size=(32, 32)))
    elif name in ("brightness", "contrast", "saturate", "pixelate", "jpeg_compression"):
        table = {"brightness": digital.BRIGHTNESS, "contrast": digital.CONTRAST, "saturate": digital.SATURATE,
                 "pixelate": digital.PIXELATE, "jpeg_compression": digital.JPEG}[name]
        out = globals()[name](x, table[s])
    elif name == "elastic_transform":
        out = elastic_transform(x, digital.ELASTIC[s], rng.uniform(-1, 1, (3, 2)), rng.uniform(-1, 1, (32, 32)),
                                rng.uniform(-1, 1, (32, 32)))
    else:
        raise ValueError(name)
    return np.uint8(out)


def _uniforms(rng):
    """The diamond-square's U(-1, 1) draws: 3 per halving of the step, 1x1 up to 16x16."""
    for k in range(5):
        for _ in range(3):
            yield rng.uniform(-1, 1, (2**k, 2**k))
