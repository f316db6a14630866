"""The bundled sample photos: competition format, licences recorded, the script that made them."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
EXPECTED = {"chelsea.png", "coffee.png", "astronaut.png", "rocket.png"}


def test_exactly_the_expected_samples_are_bundled():
    assert {path.name for path in SAMPLES.glob("*.png")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_is_a_299x299_rgb_png(name):
    with Image.open(SAMPLES / name) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.size == (299, 299)


def test_licenses_mention_every_sample():
    text = (SAMPLES / "LICENSES.md").read_text(encoding="utf-8")
    for name in sorted(EXPECTED):
        assert f"`{name}`" in text, name


def test_make_samples_centre_crops_and_resizes(tmp_path):
    """Wide and tall sources with red/blue bands exactly as wide as the crop removes come
    out pure green; every output is a 299x299 RGB PNG."""
    source = tmp_path / "source"
    source.mkdir()
    wide = np.zeros((300, 451, 3), np.uint8)
    wide[:, :75] = (255, 0, 0)
    wide[:, 75:375] = (0, 255, 0)
    wide[:, 375:] = (0, 0, 255)
    Image.fromarray(wide).save(source / "chelsea.png")
    Image.fromarray(wide.transpose(1, 0, 2).copy()).save(source / "coffee.png")
    Image.new("L", (512, 512), 128).save(source / "astronaut.png")
    Image.new("RGB", (640, 427), (10, 20, 30)).save(source / "rocket.jpg", quality=95)

    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_samples.py"),
            f"--source_dir={source}",
            f"--output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert {path.name for path in out.iterdir()} == EXPECTED
    for name in EXPECTED:
        with Image.open(out / name) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (299, 299))
    for name in ("chelsea.png", "coffee.png"):
        pixels = np.asarray(Image.open(out / name)).reshape(-1, 3)
        assert (pixels == (0, 255, 0)).all(), name
