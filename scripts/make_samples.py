"""Make the bundled sample inputs: four scikit-image photos as 299x299 RGB PNGs.

Reads the originals from a scikit-image wheel (a zip; nothing is installed) or from an
unpacked `skimage/data` directory, centre-crops each to a square and resizes it with
Lanczos. Licences and sources: samples/LICENSES.md.

    python scripts/make_samples.py --skimage_wheel=scikit_image-0.26.0-....whl
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

from absl import app, flags
from PIL import Image

SIZE = 299
# Output name -> file name in skimage/data.
SOURCES = {
    "chelsea.png": "chelsea.png",
    "coffee.png": "coffee.png",
    "astronaut.png": "astronaut.png",
    "rocket.png": "rocket.jpg",
}

flags.DEFINE_string("skimage_wheel", None, "scikit-image wheel to read skimage/data/* from.")
flags.DEFINE_string("source_dir", None, "Or: a directory holding the skimage/data files.")
flags.DEFINE_string("output_dir", "samples", "Where to write the PNGs.")
flags.mark_flags_as_mutual_exclusive(["skimage_wheel", "source_dir"], required=True)
FLAGS = flags.FLAGS


def square_resize(image: Image.Image, size: int = SIZE) -> Image.Image:
    """Centre-crop `image` to a square (the larger side loses equally on both ends) and
    resize it to `size` x `size` RGB with Lanczos."""
    image = image.convert("RGB")
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def read_sources(wheel: str | None, source_dir: str | None) -> dict[str, bytes]:
    """Bytes of each source file, by output name."""
    if wheel:
        with zipfile.ZipFile(wheel) as archive:
            return {out: archive.read(f"skimage/data/{src}") for out, src in SOURCES.items()}
    return {out: Path(source_dir, src).read_bytes() for out, src in SOURCES.items()}


def main(argv: list[str]) -> int:
    del argv
    try:
        sources = read_sources(FLAGS.skimage_wheel, FLAGS.source_dir)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        print(f"make_samples: cannot read the originals: {error}", file=sys.stderr)
        return 2
    output_dir = Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, data in sources.items():
        with Image.open(io.BytesIO(data)) as original:
            square_resize(original).save(output_dir / name, format="PNG", optimize=True)
        print(output_dir / name)
    return 0


if __name__ == "__main__":
    app.run(main)
