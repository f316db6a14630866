"""Attack outputs as the competition uses them: clipped into the epsilon ball in uint8 as
the dev toolkit does, then pooled for the defenses under anonymous names.

Per clean image x the bounds are `clip(x - eps, 0, 255)` and `clip(x + eps, 0, 255)`
(int32, then uint8); an attack's `<ImageId>.png` (else `<ImageId>.jpg`) is read as
RGB, resized (bicubic) to the clean image's size when it has another one, as the
cloud evaluation does, and clipped to them. Distances are in pixel units (0..255).

A batch's pool holds every attack's clipped images of that batch, shuffled with a
seed fixed by the pool's content and renamed `ADVBATCHkkk_IMGnnnnnn.png`, so a
defense cannot tell which attack, or which clean image, an image comes from; it is
cut into parts of at most one batch size, one defense piece each.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attacks.competition.batches import Batch, sha256_bytes
from attacks.competition.store import MAX_FILE_BYTES, Store, write_bytes_atomic
from defense.common.files import read_bounded, reason

OUTPUT_SUFFIXES = (".png", ".jpg")
# The decompression-bomb guard: a 299x299 image is 0.09 megapixels.
MAX_PIXELS = 50_000_000


def decode_rgb(data: bytes) -> np.ndarray:
    """Image bytes as uint8 RGB pixels [H, W, 3], as the toolkit reads an image; raises
    `ValueError` (with the reason) where they are not an image Pillow can read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"{width}x{height} pixels, over the {MAX_PIXELS}-pixel limit")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, Image.DecompressionBombError, EOFError) as error:
        raise ValueError(str(error) or type(error).__name__) from error


def clip_to_ball(adversarial: np.ndarray, clean: np.ndarray, epsilon: int) -> np.ndarray:
    """`adversarial` clipped to the uint8 epsilon ball around `clean` (same shapes)."""
    wide = clean.astype(np.int32)
    low = np.clip(wide - epsilon, 0, 255).astype(np.uint8)
    high = np.clip(wide + epsilon, 0, 255).astype(np.uint8)
    return np.clip(adversarial, low, high)


def distances(clean: np.ndarray, adversarial: np.ndarray) -> tuple[float, float]:
    """L-infinity and L2 distances in pixel units."""
    delta = adversarial.astype(np.float64) - clean.astype(np.float64)
    return float(np.abs(delta).max(initial=0.0)), float(np.sqrt(np.sum(delta**2)))


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 RGB pixels as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Clipped:
    """One clipped adversarial image: the digest of its PNG and its distances."""

    digest: str
    linf: float
    l2: float


@dataclass
class AttackOutput:
    """What an attack piece left: clipped images by image id, and what was wrong."""

    images: dict[str, Clipped] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    resized: dict[str, list[int]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "images": {key: vars(value) for key, value in self.images.items()},
            "missing": self.missing,
            "unreadable": self.unreadable,
            "resized": self.resized,
            "ignored": self.ignored,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttackOutput:
        images = {key: Clipped(**value) for key, value in data["images"].items()}
        return cls(images, data["missing"], data["unreadable"], data["resized"], data["ignored"])


def clip_outputs(output_dir: Path, batch: Batch, clipped_dir: Path, store: Store) -> AttackOutput:
    """Clip what an attack wrote in `output_dir` for `batch` into `clipped_dir/<id>.png`
    and the store. The clean images come from the store (checked by digest, never
    re-read unchecked from the dataset folder); what the attack wrote is read as a
    regular file of at most `MAX_FILE_BYTES` (anything else is unreadable, with the
    reason)."""
    result = AttackOutput()
    found: dict[str, Path] = {}
    for suffix in OUTPUT_SUFFIXES:
        for image in batch.images:
            path = output_dir / f"{image.image_id}{suffix}"
            if image.image_id not in found and os.path.lexists(path):
                found[image.image_id] = path
    used = {path.name for path in found.values()}
    with contextlib.suppress(OSError):
        result.ignored = sorted(name for name in os.listdir(output_dir) if name not in used)
    for image in batch.images:
        written = found.get(image.image_id)
        if written is None:
            result.missing.append(image.image_id)
            continue
        try:
            adversarial = decode_rgb(read_bounded(written, max_bytes=MAX_FILE_BYTES))
        except (OSError, ValueError) as error:
            result.unreadable[written.name] = reason(error)
            result.missing.append(image.image_id)
            continue
        clean = decode_rgb(store.read(image.digest, [image.path], what=str(image.path)))
        if adversarial.shape != clean.shape:
            result.resized[image.image_id] = [adversarial.shape[1], adversarial.shape[0]]
            size = (clean.shape[1], clean.shape[0])
            resized = Image.fromarray(adversarial).resize(size, Image.Resampling.BICUBIC)
            adversarial = np.asarray(resized, dtype=np.uint8)
        clipped = clip_to_ball(adversarial, clean, batch.epsilon)
        data = encode_png(clipped)
        write_bytes_atomic(clipped_dir / image.file_name, data)
        result.images[image.image_id] = Clipped(store.put(data), *distances(clean, clipped))
    return result


@dataclass(frozen=True)
class AdversarialImage:
    """One image of a pool: its anonymous name, where it comes from and its file."""

    name: str
    attack: str
    targeted: bool
    image_id: str
    source: Path
    digest: str


def pool(
    batch: Batch, produced: Sequence[tuple[str, bool, str, Path, str]], part_size: int
) -> list[list[AdversarialImage]]:
    """Every attack's clipped images of `batch` — (attack, targeted, image id, file,
    digest) — shuffled, named anonymously and cut into parts of `part_size`."""
    entries = sorted(produced, key=lambda entry: (entry[1], entry[0], entry[2]))
    seed = "\n".join(f"{batch.index}\t{e[0]}\t{e[1]}\t{e[2]}\t{e[4]}" for e in entries)
    random.Random(seed).shuffle(entries)
    named = [
        AdversarialImage(f"ADVBATCH{batch.index:03d}_IMG{n:06d}.png", *entry)
        for n, entry in enumerate(entries)
    ]
    return [named[start : start + part_size] for start in range(0, len(named), part_size)]


def part_digest(part: Sequence[AdversarialImage]) -> str:
    """What a defense piece's input is: its files' names and contents."""
    return sha256_bytes("".join(f"{image.name}\t{image.digest}\n" for image in part).encode())
