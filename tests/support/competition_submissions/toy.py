"""Image manipulation for the toy competition submissions beside this file.

Toy images are uniform; the label of an image is decoded from its red value,
`R // 32 + 1` (1..8), and its green value says whether `decode --half` classifies
it (G < 128). Each call appends `<submission> <input folder>` to $TOY_CALLS, if set,
so that tests can count which pieces ran.

    toy.py copy INPUT_DIR OUTPUT_DIR [--first]   copy the PNGs (only the first)
    toy.py offset INPUT_DIR OUTPUT_DIR N         add N to every channel (saturating)
    toy.py target INPUT_DIR OUTPUT_DIR           set R to the centre of the target's bin
    toy.py decode INPUT_DIR OUTPUT_FILE [--half] [--messy]
"""

import csv
import os
import sys
from pathlib import Path

from PIL import Image


def pngs(folder):
    return sorted(path for path in Path(folder).iterdir() if path.suffix == ".png")


def toy_image(k):
    """The clean toy image `imgK` (4x4, uniform; as fixtures.toy_pixels makes it)."""
    return Image.new("RGB", (4, 4), (32 * k + 16, 64 if k % 2 == 0 else 192, 128))


def image(path):
    with Image.open(path) as opened:
        return opened.convert("RGB")


def label(rgb):
    return rgb.getpixel((0, 0))[0] // 32 + 1


def main(command, source, destination, *rest):
    calls = os.environ.get("TOY_CALLS")
    if calls:
        with open(calls, "a") as log:
            log.write(f"{Path.cwd().name} {Path(source).parent.name}\n")  # the piece's folder
    if command == "copy":
        for path in pngs(source)[:1] if "--first" in rest else pngs(source):
            image(path).save(Path(destination) / path.name)
    elif command == "offset":
        for path in pngs(source):
            shifted = image(path).point(lambda value: min(255, value + int(rest[0])))
            shifted.save(Path(destination) / path.name)
    elif command == "target":
        with open(Path(source) / "target_class.csv", newline="") as handle:
            targets = {name: int(target) for name, target in csv.reader(handle)}
        for path in pngs(source):
            _, green, blue = image(path).split()
            red = Image.new("L", green.size, 32 * (targets[path.name] - 1) + 16)
            Image.merge("RGB", (red, green, blue)).save(Path(destination) / path.name)
    elif command == "decode":
        rows = ["ImageId,PredictedLabel"] if "--messy" in rest else []
        for path in pngs(source):
            rgb = image(path)
            if "--half" in rest and rgb.getpixel((0, 0))[1] >= 128:
                continue
            if "--messy" in rest:
                rows += [f"{path.name},x{label(rgb)}", f"{path.stem},{label(rgb)}"]
            else:
                rows.append(f"{path.name},{label(rgb)}")
        if "--messy" in rest:
            rows.append("unknown.png,3")
        Path(destination).write_text("".join(f"{row}\n" for row in rows))
    else:
        sys.exit(f"toy.py: unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
