"""Glyphs: an Omniglot-like few-shot set that attnbench renders itself, offline, from the fonts matplotlib ships.

This is rendered, not drawn by hand: each letter of several scripts (Latin, digits, Greek, Cyrillic,
Armenian, Hebrew, Georgian, Lao, Tifinagh) is a class; each of its images is the letter set in one of the
shipped fonts and styles that really contain it (DejaVu Sans / Serif / Mono and STIX in four styles each,
Computer Modern in six), then given a random stroke width (as drawn or thickened) and a random affine
distortion (rotation, shear, scale, aspect, shift). A letter that looks like an earlier one in some font
(Latin A, Greek Α, Cyrillic А; Latin n, Armenian ո) is left out, so no two classes are the same picture.
Classes are split by letter into train / val / test. The whole set (342 classes × 20 images at 28×28) takes
3-10 s to render on a 2-core CPU, so it is rendered once per configuration and ``render_seed`` and kept in
the user's cache folder (``$XDG_CACHE_HOME/attnbench``, else ``~/.cache/attnbench``), where a later run loads
it in a fraction of a second. The same settings give the same bytes on every machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .cache import cache_folder
from .episodes import FewShotData, split_classes, split_from_arrays

# script -> inclusive code-point ranges; only letters (and the digits) without diacritics are used
SCRIPTS: dict[str, list[tuple[int, int]]] = {
    "latin": [(0x41, 0x5A), (0x61, 0x7A)],
    "digits": [(0x30, 0x39)],
    "greek": [(0x391, 0x3A9), (0x3B1, 0x3C9)],
    "cyrillic": [(0x410, 0x44F)],
    "armenian": [(0x531, 0x556), (0x561, 0x586)],
    "hebrew": [(0x5D0, 0x5EA)],
    "georgian": [(0x10D0, 0x10FA)],
    "lao": [(0xE81, 0xEAE)],
    "tifinagh": [(0x2D30, 0x2D65)],
}

# the text fonts among matplotlib's: DejaVu and STIX in four styles, Computer Modern text faces. Left out:
# symbol fonts (cmsy10, cmex10, STIX size variants and NonUnicode), display fragments and LastResort.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)
REFERENCE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")  # where look-alikes are judged
SAME_PICTURE = 0.97  # cosine similarity of two letters' renders (in a font both have) above which the later is dropped
RENDER_SCALE = 2  # letters are drawn at twice the output size, distorted there, then box-filtered down
RENDERER_VERSION = 3  # part of the cache key: raise it whenever a change here changes the pictures


@dataclass
class Letter:
    char: str
    script: str
    fonts: list[int]  # indices into FONT_FILES of the fonts that contain it

    @property
    def name(self) -> str:
        """The letter and its Unicode name, e.g. "ю cyrillic small letter yu"."""
        return f"{self.char} {unicodedata.name(self.char, hex(ord(self.char))).lower()}"


def font_folder() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _letters(scripts: list[str], fonts: list) -> list[Letter]:
    letters = []
    for script in scripts:
        for lo, hi in SCRIPTS[script]:
            for code in range(lo, hi + 1):
                char = chr(code)
                if not unicodedata.category(char).startswith(("L", "Nd")) or unicodedata.decomposition(char):
                    continue
                present = [i for i, font in enumerate(fonts) if font.get_char_index(code)]
                if present:
                    letters.append(Letter(char, script, present))
    return letters


def _draw(font, char: str, size: int, canvas: int) -> np.ndarray:
    """One letter at ``size`` pixels per em, its ink centred on a ``canvas``² float image in [0, 1];
    shrunk only when it would not fit (a wide letter), so relative sizes (o against O) are kept."""
    font.clear()
    font.set_size(size, 72)
    font.set_text(char)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255
    limit = int(canvas * 0.9)
    if max(ink.shape) > limit:
        shape = [max(1, round(s * limit / max(ink.shape))) for s in ink.shape]
        ink = F.interpolate(torch.from_numpy(ink)[None, None], size=shape, mode="area")[0, 0].numpy()
    out = np.zeros((canvas, canvas), np.float32)
    top, left = (canvas - ink.shape[0]) // 2, (canvas - ink.shape[1]) // 2
    out[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return out


def _distinct(letters: list[Letter], fonts: list, reference: list[int], canvas: int, size: int) -> list[Letter]:
    """Drop every letter that, in some reference font both have, looks like a letter kept before it."""
    renders, present = [], []
    for i in reference:
        pictures = torch.stack([torch.from_numpy(_draw(fonts[i], letter.char, size, canvas)).flatten()
                                if i in letter.fonts else torch.zeros(canvas * canvas) for letter in letters])
        renders.append(F.normalize(pictures, dim=1))
        present.append(torch.tensor([i in letter.fonts for letter in letters]))
    # letter × letter: the highest similarity over the reference fonts that contain both
    similarity = torch.stack([torch.where(has[:, None] & has[None, :], r @ r.T, torch.zeros(()))
                              for r, has in zip(renders, present)]).amax(0)
    kept: list[int] = []
    for j in range(len(letters)):
        if not kept or float(similarity[j, kept].max()) <= SAME_PICTURE:
            kept.append(j)
    return [letters[j] for j in kept]


def _dilate(x: Tensor) -> Tensor:
    """Grey-level dilation by a 3×3 square, as two separable maxima of shifted copies (cheaper than max-pool)."""
    x = torch.maximum(x, torch.maximum(F.pad(x[..., 1:, :], (0, 0, 0, 1)), F.pad(x[..., :-1, :], (0, 0, 1, 0))))
    return torch.maximum(x, torch.maximum(F.pad(x[..., :, 1:], (0, 1)), F.pad(x[..., :, :-1], (1, 0))))


def _jitter(pictures: Tensor, g: torch.Generator, out_size: int) -> Tensor:
    """Random stroke width and affine distortion of float pictures (N, 1, S, S), box-filtered to out_size."""
    n = len(pictures)
    # stroke width: as drawn or thickened by a pixel of the large canvas (the fonts' own weights, light to
    # bold, already vary it; thinning a light face would erase its hairlines, thickening a bold one twice
    # fills its counters)
    x = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.5, pictures, _dilate(pictures))
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    shear = (torch.rand(n, generator=g) * 2 - 1) * 0.15
    scale = 0.85 + torch.rand(n, generator=g) * 0.3
    aspect = 0.9 + torch.rand(n, generator=g) * 0.2
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.08
    cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros(n), torch.ones(n)
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    skew = torch.stack([torch.stack([one, shear], 1), torch.stack([zero, one], 1)], 1)
    stretch = torch.diag_embed(torch.stack([scale * aspect, scale / aspect], 1))
    forward = rotate @ skew @ stretch  # picture -> output; grid_sample wants output -> picture
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.adaptive_avg_pool2d(x, out_size)


def render_glyphs(scripts: list[str], image_size: int, images_per_class: int,
                  render_seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 images (N, 1, S, S) with ink bright on black, labels, and class names, in class order."""
    from matplotlib.ft2font import FT2Font

    folder = font_folder()
    fonts = [FT2Font(str(folder / name)) for name in FONT_FILES]
    canvas = image_size * RENDER_SCALE
    size = round(canvas * 0.62)  # pixels per em: capitals fill about half the canvas, as Omniglot strokes do
    letters = _letters(scripts, fonts)
    reference = [FONT_FILES.index(name) for name in REFERENCE_FONTS]
    letters = _distinct(letters, fonts, reference, image_size, round(image_size * 0.62))
    g = torch.Generator().manual_seed(render_seed)
    drawn: dict[tuple[int, int], int] = {}  # (letter, font) -> row of ``bases``
    bases: list[np.ndarray] = []
    rows, labels = [], []
    for label, letter in enumerate(letters):
        # every font the letter has, in a random order, repeated until there are enough images
        order = torch.randperm(len(letter.fonts), generator=g).tolist()
        for k in range(images_per_class):
            font = letter.fonts[order[k % len(order)]]
            if (label, font) not in drawn:
                drawn[(label, font)] = len(bases)
                bases.append(_draw(fonts[font], letter.char, size, canvas))
            rows.append(drawn[(label, font)])
            labels.append(label)
    pictures = torch.from_numpy(np.stack(bases))[torch.tensor(rows)].unsqueeze(1)
    images = torch.cat([_jitter(chunk, g, image_size) for chunk in pictures.split(2048)])
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, np.asarray(labels, dtype=np.int64), [letter.name for letter in letters]


def cached_render(scripts: list[str], image_size: int, images_per_class: int,
                  render_seed: int, cache: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``render_glyphs``, from the cache when this configuration was rendered before (written atomically, so
    parallel runs at worst render twice; an unreadable cache file is rendered again); ``cache`` False renders
    every time."""
    if not cache:
        return render_glyphs(scripts, image_size, images_per_class, render_seed)
    import matplotlib

    settings = {"scripts": scripts, "image_size": image_size, "images_per_class": images_per_class,
                "render_seed": render_seed, "renderer": RENDERER_VERSION, "matplotlib": matplotlib.__version__}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_folder() / f"glyphs-{key}.npz"
    try:
        with np.load(path) as stored:
            return stored["images"], stored["labels"], [str(n) for n in stored["names"]]
    except (OSError, ValueError, KeyError):
        pass
    images, labels, names = render_glyphs(scripts, image_size, images_per_class, render_seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, names=np.asarray(names))
        os.replace(tmp, path)
    except OSError:  # a read-only home: render every time rather than fail
        pass
    return images, labels, names


def load_glyphs(scripts: list[str] | None = None, image_size: int = 28, images_per_class: int = 20,
                render_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.25,
                split_seed: int = 0, cache: bool = True) -> FewShotData:
    """The rendered glyph set, split by letter into train / val / test classes."""
    scripts = list(scripts or SCRIPTS)
    unknown = [s for s in scripts if s not in SCRIPTS]
    if unknown:
        raise UserError(f"data.scripts has {', '.join(unknown)}, which glyphs does not know; "
                        f"choose from {', '.join(SCRIPTS)}")
    if image_size < 8:
        raise UserError(f"data.image_size={image_size} is too small to draw a letter; use 28 or 32")
    if images_per_class < 2:
        raise UserError(f"data.images_per_class={images_per_class}: episodes need at least 2 images per class")
    images, labels, names = cached_render(scripts, image_size, images_per_class, render_seed, cache)
    source = "data=glyphs"
    parts = split_classes(names, val_fraction, test_fraction, split_seed, source)
    splits = []
    for part in parts:
        keep = np.isin(labels, part)
        splits.append(split_from_arrays(images[keep], labels[keep], names))
    return FewShotData(*splits, source=source)
