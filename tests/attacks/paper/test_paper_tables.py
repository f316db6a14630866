"""The paper's numbers as data (attacks.paper.tables): each table's shape, settings and
values against a second copy of the paper's rows, and the text layout of a table."""

import pytest

from attacks.catalog import get_attack
from attacks.evaluation.protocol import SCENARIOS
from attacks.paper.tables import (
    ADAPTIVE,
    ADAPTIVE_APGD,
    ADAPTIVE_EPSILON,
    ADAPTIVE_ROWS,
    ATTACK_ROWS,
    CLEAN,
    PAPER_MODELS,
    ROWS,
    TABLES,
    Column,
    parse_overrides,
    parse_rows,
    parse_tables,
    render_paper_table,
    render_table,
    row_attack,
    row_title,
)
from defense.common.errors import ParameterError

# The paper's rows as it prints them (Tables 1-6), in its column order: per model,
# target model then defense model (Table 1: one number per model and row).
PAPER_ROWS = {
    1: """
w/o randomization 100% 100% 100% 100%
w randomization 97.3% 98.3% 99.3% 99.2%
""",
    2: """
FGSM-2 33.2% 65.1% 26.3% 71.8% 65.3% 81.0% 84.4% 95.7%
FGSM-5 31.1% 54.5% 20.4% 54.3% 61.7% 74.1% 87.4% 94.5%
FGSM-10 33.0% 52.4% 20.4% 46.1% 61.2% 71.3% 90.2% 94.3%
DeepFool 0% 98.3% 0% 97.7% 0% 98.2% 0.2% 99.1%
C&W 0% 96.9% 0% 97.1% 0.3% 97.7% 0.9% 98.8%
""",
    3: """
FGSM-2 35.1% 63.8% 29.5% 70.1% 71.6% 83.4% 86.3% 96.4%
FGSM-5 32.4% 53.9% 23.2% 52.3% 68.3% 78.2% 88.4% 95.4%
FGSM-10 34.7% 51.8% 22.4% 43.8% 66.8% 75.6% 90.7% 95.2%
DeepFool 1.1% 98.2% 1.7% 97.8% 0.6% 98.4% 1.0% 99.2%
C&W 1.1% 97.4% 1.7% 97.0% 0.8% 97.9% 1.6% 99.1%
""",
    4: """
FGSM-2 37.3% 41.2% 39.2% 44.9% 71.5% 74.3% 86.2% 88.9%
FGSM-5 31.7% 34.0% 24.6% 29.7% 65.2% 67.3% 85.8% 87.5%
FGSM-10 30.4% 32.8% 18.6% 21.7% 62.9% 64.5% 86.6% 87.9%
DeepFool 0.6% 81.3% 0.9% 80.5% 0.9% 69.4% 1.6% 93.5%
C&W 0.6% 62.9% 1.0% 74.3% 1.6% 68.3% 5.8% 86.1%
""",
    5: """
FGSM-2 36.4% 39.6% 29.8% 34.4% 71.3% 74.0% 88.2% 94.8%
FGSM-5 33.5% 36.2% 22.2% 26.2% 68.4% 71.0% 92.1% 94.4%
FGSM-10 34.5% 38.8% 21.3% 23.6% 67.4% 70.4% 93.7% 94.0%
DeepFool 0.9% 97.2% 0.9% 95.2% 0.9% 87.6% 1.5% 99.2%
C&W 0.8% 70.2% 0.9% 76.8% 1.0% 79.4% 2.4% 98.2%
""",
    6: """
FGSM-2 30.8% 56.2% 31.6% 44.6% 66.2% 75.0% 87.6% 97.2%
FGSM-5 31.2% 48.8% 25.6% 35.8% 61.4% 70.2% 91.2% 96.6%
FGSM-10 36.4% 51.0% 23.8% 32.6% 62.8% 68.2% 94.8% 95.2%
DeepFool 2.6% 99.4% 1.0% 98.6% 1.2% 97.4% 1.2% 99.4%
C&W 2.6% 97.8% 1.0% 94.8% 2.0% 94.8% 1.8% 99.6%
""",
}
ROW_NAMES = {
    "FGSM-2": "fgsm-2",
    "FGSM-5": "fgsm-5",
    "FGSM-10": "fgsm-10",
    "DeepFool": "deepfool",
    "C&W": "cw",
}
PAPER_ATTACK_ROWS = ["fgsm-2", "fgsm-5", "fgsm-10", "deepfool", "cw"]


def printed(number):
    """Table `number` as printed: {row label: [numbers]}."""
    rows = {}
    for line in PAPER_ROWS[number].strip().splitlines():
        label, *values = line.rsplit(" ", 8 if number > 1 else 4)
        rows[label] = [float(value.rstrip("%")) for value in values]
    return rows


def test_there_are_the_papers_six_tables_over_its_four_models():
    assert list(TABLES) == [1, 2, 3, 4, 5, 6]
    for table in TABLES.values():
        for by_model in table.values.values():
            assert list(by_model) == list(PAPER_MODELS)


def test_table_1_has_two_rows_of_four_models():
    table = TABLES[1]
    assert table.clean and list(table.values) == [CLEAN]
    rows = printed(1)
    assert [len(values) for values in rows.values()] == [4, 4]
    without = [table.values[CLEAN][model][0] for model in PAPER_MODELS]
    with_randomization = [table.values[CLEAN][model][1] for model in PAPER_MODELS]
    assert without == rows["w/o randomization"]
    assert with_randomization == rows["w randomization"]


@pytest.mark.parametrize("number", [2, 3, 4, 5, 6])
def test_attack_tables_have_five_rows_of_four_target_defense_pairs(number):
    table = TABLES[number]
    assert not table.clean
    assert list(table.values) == PAPER_ATTACK_ROWS
    rows = printed(number)
    assert [ROW_NAMES[label] for label in rows] == PAPER_ATTACK_ROWS
    for label, values in rows.items():
        assert len(values) == 8
        typed = [v for model in PAPER_MODELS for v in table.values[ROW_NAMES[label]][model]]
        assert typed == values, (number, label)
        assert all(0 <= v <= 100 for v in typed)


def test_each_table_has_the_papers_scenario_and_image_set():
    scenarios = {n: t.scenario for n, t in TABLES.items()}
    assert scenarios == {
        1: "vanilla",
        2: "vanilla",
        3: "single_pattern",
        4: "ensemble_pattern",
        5: "one_pixel_padding",
        6: "one_pixel_resizing",
    }
    assert set(scenarios.values()) <= set(SCENARIOS)
    assert {n: t.paper_images for n, t in TABLES.items()} == {
        1: 5000,
        2: 5000,
        3: 5000,
        4: 500,
        5: 500,
        6: 500,
    }


def test_rows_use_the_papers_attack_settings():
    assert [ROWS[f"fgsm-{eps}"].params for eps in (2, 5, 10)] == [
        {"epsilon": 2.0},
        {"epsilon": 5.0},
        {"epsilon": 10.0},
    ]
    # DeepFool and C&W at cleverhans' defaults: no setting of their own
    assert ROWS["deepfool"].params == {} and ROWS["cw"].params == {}
    for row in ATTACK_ROWS:
        get_attack(str(ROWS[row].attack)).check_names(ROWS[row].params)
    assert TABLES[1].rows() == [CLEAN]
    for number in (2, 3, 4, 5, 6):
        assert TABLES[number].rows() == [*PAPER_ATTACK_ROWS, ADAPTIVE, ADAPTIVE_APGD]
    assert ADAPTIVE_ROWS == (ADAPTIVE, ADAPTIVE_APGD)
    assert TABLES[2].rows(["cw", "fgsm-2"]) == ["fgsm-2", "cw"]
    assert TABLES[5].rows([ADAPTIVE_APGD]) == [ADAPTIVE_APGD]


def test_the_adaptive_row_attacks_the_defense_it_faces():
    assert row_attack(ADAPTIVE, randomized=True, overrides={}) == ("eot_pgd", {"epsilon": 8.0})
    overrides = {ADAPTIVE: {"samples": 5, "steps": 3}}
    assert row_attack(ADAPTIVE, randomized=False, overrides=overrides) == (
        "pgd",
        {"epsilon": 8.0, "steps": 3},
    )
    assert row_title("eot_pgd", {"epsilon": 8.0}) == "EOT-PGD-8 (adaptive)"
    assert row_title("pgd", {"epsilon": 8.0}) == "PGD-8 on the defense (adaptive)"
    assert row_title("fgsm", {"epsilon": 10.0}) == "FGSM-10"


def test_the_apgd_eot_row_is_eot_pgds_budget_and_samples_with_apgds_defaults():
    eot_pgd = get_attack("eot_pgd").defaults
    assert ROWS[ADAPTIVE_APGD].params == {
        "epsilon": ADAPTIVE_EPSILON,
        "samples": eot_pgd["samples"],
    }
    assert ROWS[ADAPTIVE_APGD].params["epsilon"] == ROWS[ADAPTIVE].params["epsilon"] == 8.0
    attack, params = row_attack(ADAPTIVE_APGD, randomized=True, overrides={})
    resolved = get_attack(str(attack)).resolved(params)
    assert attack == "apgd" and resolved == {
        **get_attack("apgd").defaults,
        "epsilon": 8.0,
        "samples": 30,
    }
    # On a fixed defense it is plain APGD: the same settings, its samples unused.
    overrides = {ADAPTIVE_APGD: {"n_iter": 20}}
    assert row_attack(ADAPTIVE_APGD, randomized=False, overrides=overrides) == (
        "apgd",
        {"epsilon": 8.0, "samples": 30, "n_iter": 20},
    )
    assert row_title("apgd", {"epsilon": 8.0}) == "APGD-EOT-8 (adaptive)"
    assert row_title("apgd", {"epsilon": 8.0}, randomized=False) == (
        "APGD-8 on the defense (adaptive)"
    )
    assert parse_rows([ADAPTIVE_APGD, ADAPTIVE]) == [ADAPTIVE, ADAPTIVE_APGD]
    assert parse_overrides(["adaptive-apgd.n_iter=10", "adaptive-apgd.dlr=true"]) == {
        ADAPTIVE_APGD: {"n_iter": 10, "dlr": True}
    }


def test_parsing_tables_rows_and_overrides():
    assert parse_tables(["all"]) == [1, 2, 3, 4, 5, 6]
    assert parse_tables(["4", "2", "4"]) == [2, 4]
    with pytest.raises(ParameterError, match="the paper has no table '7'; choose among 1, 2, 3"):
        parse_tables(["7"])
    assert parse_rows(["cw", "fgsm-5"]) == ["fgsm-5", "cw"]
    with pytest.raises(ParameterError, match="attacks: unknown row"):
        parse_rows(["bim"])
    assert parse_overrides(
        ["cw.max_iterations=100", "cw.abort_early=false", "adaptive.epsilon=4"]
    ) == {
        "cw": {"max_iterations": 100, "abort_early": False},
        "adaptive": {"epsilon": 4.0},
    }
    for text, message in (
        ("cw=3", "not ROW.PARAM=VALUE"),
        ("clean.x=1", "not ROW.PARAM=VALUE"),
        ("cw.epsilon=3", "cw takes confidence"),
        ("cw.max_iterations=many", "invalid literal"),
        ("cw.abort_early=maybe", "not true or false"),
    ):
        with pytest.raises(ParameterError, match=message) as caught:
            parse_overrides([text])
        assert caught.value.parameters == ("overrides",)


def test_a_table_shows_ours_the_papers_and_the_difference():
    columns = [Column("inception_v3", "Inception-v3", "inception_v3")]
    measured = {("inception_v3", "fgsm-2"): (0.30, 0.70), ("inception_v3", "cw"): None}
    rows = [("fgsm-2", "FGSM-2"), ("cw", "C&W"), (ADAPTIVE, "EOT-PGD-8 (adaptive)")]
    text = render_table(TABLES[2], columns, measured, rows, ["40 images"])
    lines = text.splitlines()
    assert lines[:2] == ["Table 2: top-1 accuracy (%), vanilla attack", "40 images"]
    assert "target model" in lines[4] and "defense model" in lines[4]
    assert lines[5].split() == ["|", "ours", "paper", "diff", "|", "ours", "paper", "diff"]
    assert lines[6].split() == ["FGSM-2", "|", "30.0", "33.2", "-3.2", "|", "70.0", "65.1", "+4.9"]
    assert lines[7].split() == ["C&W", "|", "-", "0.0", "-", "|", "-", "96.9", "-"]
    assert lines[8].split()[-8:] == ["|", "-", "-", "-", "|", "-", "-", "-"]
    assert "The paper's Table" not in text  # every column is one of the paper's


def test_a_model_the_paper_lacks_is_followed_by_the_papers_table():
    columns = [Column("digits", "digits CNN", None)]
    text = render_table(TABLES[4], columns, {("digits", "cw"): (0.25, 0.5)}, [("cw", "C&W")])
    ours, paper = text.split("The paper's Table 4 (ImageNet, 500 images):")
    lines = ours.splitlines()
    assert lines[-2].split() == ["C&W", "|", "25.0", "|", "50.0"]
    assert lines[-3].split() == ["|", "ours", "|", "ours"]
    assert paper.strip().splitlines()[-1].split() == [
        "C&W",
        "|",
        "0.6",
        "|",
        "62.9",
        "|",
        "1.0",
        "|",
        "74.3",
        "|",
        "1.6",
        "|",
        "68.3",
        "|",
        "5.8",
        "|",
        "86.1",
    ]
    assert render_paper_table(TABLES[4]) in text


def test_table_1_has_the_papers_layout():
    columns = [Column(m, m, m) for m in ("inception_v3", "resnet_v2_101")]
    measured = {("inception_v3", CLEAN): (1.0, 0.96)}
    lines = render_table(TABLES[1], columns, measured, [(CLEAN, "clean")]).splitlines()
    assert lines[-2].split() == [
        "w/o",
        "randomization",
        "|",
        "100.0",
        "100.0",
        "+0.0",
        "|",
        "-",
        "100.0",
        "-",
    ]
    assert lines[-1].split() == [
        "w",
        "randomization",
        "|",
        "96.0",
        "97.3",
        "-1.3",
        "|",
        "-",
        "98.3",
        "-",
    ]
