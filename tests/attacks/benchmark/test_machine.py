"""attacks.benchmark.machine and the projections of defense_speed: the CPU's bfloat16
units decide bfloat16's default, and a competition batch is always 30 patterns."""

import pytest

from attacks.benchmark.defense_speed import competition_line, measures_bfloat16
from attacks.benchmark.machine import BF16_UNITS, cpu_features, cpu_flags, has_bf16_units
from attacks.benchmark.options import BenchmarkOptions

SAPPHIRE_RAPIDS = {"avx2", "fma", "avx512f", "avx512_fp16", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (SAPPHIRE_RAPIDS, True),
        ({"avx512f", "avx512_bf16"}, True),
        ({"amx_bf16", "amx_tile"}, True),
        ({"avx2", "fma", "avx512f"}, False),
        (set(), False),
    ],
)
def test_bf16_units_are_avx512_bf16_or_amx_bf16(present, expected):
    assert has_bf16_units(present) is expected


def test_the_units_are_listed_in_order_or_said_absent():
    assert cpu_features(SAPPHIRE_RAPIDS) == (
        "avx2, fma, avx512f, avx512_fp16, avx512_bf16, amx_bf16, amx_tile"
    )
    assert cpu_features({"avx2", "fma", "sse4_2"}) == "avx2, fma"
    assert cpu_features(set()) == "none of avx2/avx512/amx"


def test_this_cpus_units_are_read():
    present = cpu_flags()
    if not present:
        pytest.skip("no /proc/cpuinfo flags here")
    assert has_bf16_units() == bool(present & set(BF16_UNITS))
    for unit in BF16_UNITS:
        assert (unit in cpu_features()) == (unit in present)


def test_bfloat16_is_measured_by_default_where_the_cpu_has_bf16_units():
    assert measures_bfloat16(BenchmarkOptions()) == has_bf16_units()
    assert measures_bfloat16(BenchmarkOptions(bfloat16=True)) is True
    assert measures_bfloat16(BenchmarkOptions(bfloat16=False)) is False


def test_a_competition_batch_is_projected_at_the_challenges_30_patterns():
    assert competition_line(1.0, 30) == (
        "100 s for 100 images at 30 patterns: within the 500 s budget"
    )
    assert competition_line(1.0, 4) == (
        "750 s for 100 images at 30 patterns, scaled from 4: OVER the 500 s budget"
    )
