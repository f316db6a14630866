"""The paper's Tables 1-6: their numbers, layouts and settings, and their text rendering.

The numbers are typed in from the paper (top-1 accuracy in %, Tables 1-6 of
Xie et al., ICLR 2018), in its column order: per model, target model then
defense model. Table 1 (clean images) is stored as one row whose "target" is
the model without randomization and whose "defense" is the model with it.

Every table fixes a scenario (`attacks.evaluation.scenarios`) and an image set: the whole
dataset (the paper's 5000 images, Tables 1-3) or its 500-image subset (Tables
4-6). Its attack rows are the paper's (FGSM with epsilon 2, 5, 10 pixel units,
DeepFool, C&W at the attacks' cleverhans defaults), plus two adaptive rows the
paper does not have: EOT-PGD (Athalye et al., 2018) and APGD-EOT (Croce & Hein,
2020) on the randomized defense itself, or PGD and plain APGD on the fixed defense
of the diagnostic Tables 5-6.

Imports no TensorFlow: the command's flags are defined from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attacks.catalog import get_attack
from defense.common.errors import ParameterError

PAPER_MODELS = (
    "inception_v3",
    "resnet_v2_101",
    "inception_resnet_v2",
    "ens_adv_inception_resnet_v2",
)
MODEL_TITLES = {
    "inception_v3": "Inception-v3",
    "resnet_v2_101": "ResNet-v2-101",
    "inception_resnet_v2": "Inception-ResNet-v2",
    "ens_adv_inception_resnet_v2": "ens-adv-Inception-ResNet-v2",
}
# The paper's image sets (Section 4.1 and 4.5).
DATASET_IMAGES, SUBSET_IMAGES = 5000, 500
# Athalye et al.'s budget against this defense (0.031 in [0, 1], about 8/255).
ADAPTIVE_EPSILON = 8.0
# EOT-PGD's patterns per image per forward pass: bounds its memory (recorded with its cells).
EOT_CHUNK_SIZE = 5
# EOT-PGD's patterns per EOT gradient, which APGD-EOT takes too: the two adaptive rows
# average their gradients over as many patterns.
EOT_SAMPLES: int = get_attack("eot_pgd").defaults["samples"]


@dataclass(frozen=True)
class Row:
    """A table row: an attack of the catalog with its settings (None: the clean images);
    an adaptive row, which attacks the defense itself, names its attack on a fixed
    defense in `fixed`."""

    name: str
    attack: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    fixed: str | None = None


CLEAN = "clean"
ADAPTIVE, ADAPTIVE_APGD = "adaptive", "adaptive-apgd"
ROWS = {
    row.name: row
    for row in (
        Row(CLEAN, None),
        *(Row(f"fgsm-{eps}", "fgsm", {"epsilon": float(eps)}) for eps in (2, 5, 10)),
        Row("deepfool", "deepfool"),
        Row("cw", "cw"),
        Row(ADAPTIVE, "eot_pgd", {"epsilon": ADAPTIVE_EPSILON}, fixed="pgd"),
        Row(
            ADAPTIVE_APGD,
            "apgd",
            {"epsilon": ADAPTIVE_EPSILON, "samples": EOT_SAMPLES},
            fixed="apgd",
        ),
    )
}
# The rows that attack the defense itself, last in every attack table.
ADAPTIVE_ROWS = tuple(name for name, row in ROWS.items() if row.fixed is not None)
# The rows `--attacks` chooses from: every row but the clean images (Table 1's only row).
ATTACK_ROWS = tuple(name for name in ROWS if name != CLEAN)


def _columns(*values: float) -> dict[str, tuple[float, float]]:
    """Eight numbers in the paper's column order as model -> (target, defense)."""
    assert len(values) == 2 * len(PAPER_MODELS), values
    return {model: (values[2 * i], values[2 * i + 1]) for i, model in enumerate(PAPER_MODELS)}


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: what it measures and the paper's numbers (in %)."""

    number: int
    caption: str
    scenario: str
    subset: bool
    values: Mapping[str, Mapping[str, tuple[float, float]]]

    @property
    def paper_images(self) -> int:
        """How many images the paper measured the table on."""
        return SUBSET_IMAGES if self.subset else DATASET_IMAGES

    @property
    def clean(self) -> bool:
        """Table 1: clean accuracies, without and with randomization."""
        return CLEAN in self.values

    def rows(self, selected: Sequence[str] = ATTACK_ROWS) -> list[str]:
        """The rows a run computes: Table 1's clean row, else the `selected` attack rows
        in the paper's order with the adaptive rows last."""
        if self.clean:
            return [CLEAN]
        return [name for name in (*self.values, *ADAPTIVE_ROWS) if name in selected]

    def paper(self, row: str, model: str) -> tuple[float, float] | None:
        """The paper's (target, defense) accuracies in %, or None where it has none."""
        return self.values.get(row, {}).get(model)


TABLES = {
    table.number: table
    for table in (
        PaperTable(
            1,
            "clean images",
            "vanilla",
            False,
            {CLEAN: _columns(100, 97.3, 100, 98.3, 100, 99.3, 100, 99.2)},
        ),
        PaperTable(
            2,
            "vanilla attack",
            "vanilla",
            False,
            {
                "fgsm-2": _columns(33.2, 65.1, 26.3, 71.8, 65.3, 81.0, 84.4, 95.7),
                "fgsm-5": _columns(31.1, 54.5, 20.4, 54.3, 61.7, 74.1, 87.4, 94.5),
                "fgsm-10": _columns(33.0, 52.4, 20.4, 46.1, 61.2, 71.3, 90.2, 94.3),
                "deepfool": _columns(0, 98.3, 0, 97.7, 0, 98.2, 0.2, 99.1),
                "cw": _columns(0, 96.9, 0, 97.1, 0.3, 97.7, 0.9, 98.8),
            },
        ),
        PaperTable(
            3,
            "single-pattern attack",
            "single_pattern",
            False,
            {
                "fgsm-2": _columns(35.1, 63.8, 29.5, 70.1, 71.6, 83.4, 86.3, 96.4),
                "fgsm-5": _columns(32.4, 53.9, 23.2, 52.3, 68.3, 78.2, 88.4, 95.4),
                "fgsm-10": _columns(34.7, 51.8, 22.4, 43.8, 66.8, 75.6, 90.7, 95.2),
                "deepfool": _columns(1.1, 98.2, 1.7, 97.8, 0.6, 98.4, 1.0, 99.2),
                "cw": _columns(1.1, 97.4, 1.7, 97.0, 0.8, 97.9, 1.6, 99.1),
            },
        ),
        PaperTable(
            4,
            "ensemble-pattern attack",
            "ensemble_pattern",
            True,
            {
                "fgsm-2": _columns(37.3, 41.2, 39.2, 44.9, 71.5, 74.3, 86.2, 88.9),
                "fgsm-5": _columns(31.7, 34.0, 24.6, 29.7, 65.2, 67.3, 85.8, 87.5),
                "fgsm-10": _columns(30.4, 32.8, 18.6, 21.7, 62.9, 64.5, 86.6, 87.9),
                "deepfool": _columns(0.6, 81.3, 0.9, 80.5, 0.9, 69.4, 1.6, 93.5),
                "cw": _columns(0.6, 62.9, 1.0, 74.3, 1.6, 68.3, 5.8, 86.1),
            },
        ),
        PaperTable(
            5,
            "one-pixel padding",
            "one_pixel_padding",
            True,
            {
                "fgsm-2": _columns(36.4, 39.6, 29.8, 34.4, 71.3, 74.0, 88.2, 94.8),
                "fgsm-5": _columns(33.5, 36.2, 22.2, 26.2, 68.4, 71.0, 92.1, 94.4),
                "fgsm-10": _columns(34.5, 38.8, 21.3, 23.6, 67.4, 70.4, 93.7, 94.0),
                "deepfool": _columns(0.9, 97.2, 0.9, 95.2, 0.9, 87.6, 1.5, 99.2),
                "cw": _columns(0.8, 70.2, 0.9, 76.8, 1.0, 79.4, 2.4, 98.2),
            },
        ),
        PaperTable(
            6,
            "one-pixel resizing",
            "one_pixel_resizing",
            True,
            {
                "fgsm-2": _columns(30.8, 56.2, 31.6, 44.6, 66.2, 75.0, 87.6, 97.2),
                "fgsm-5": _columns(31.2, 48.8, 25.6, 35.8, 61.4, 70.2, 91.2, 96.6),
                "fgsm-10": _columns(36.4, 51.0, 23.8, 32.6, 62.8, 68.2, 94.8, 95.2),
                "deepfool": _columns(2.6, 99.4, 1.0, 98.6, 1.2, 97.4, 1.2, 99.4),
                "cw": _columns(2.6, 97.8, 1.0, 94.8, 2.0, 94.8, 1.8, 99.6),
            },
        ),
    )
}


def parse_tables(names: Sequence[str]) -> list[int]:
    """Table numbers from their names ("2", "4"; "all": every table), in order, once each."""
    if "all" in names:
        return list(TABLES)
    choices = f"choose among {', '.join(map(str, TABLES))} (or all)"
    numbers = []
    for name in names:
        if not (name.strip().isdigit() and int(name) in TABLES):
            raise ParameterError(f"tables: the paper has no table {name!r}; {choices}", "tables")
        numbers.append(int(name))
    if not numbers:
        raise ParameterError(f"tables: none given; {choices}", "tables")
    return sorted(set(numbers))


def parse_rows(names: Sequence[str]) -> list[str]:
    """Attack rows by name (`ATTACK_ROWS`), in the tables' order."""
    unknown = [name for name in names if name not in ATTACK_ROWS]
    if unknown or not names:
        problem = f"unknown row(s) {', '.join(map(repr, unknown))}" if unknown else "none given"
        raise ParameterError(
            f"attacks: {problem}; the attack rows are {', '.join(ATTACK_ROWS)}", "attacks"
        )
    return [name for name in ATTACK_ROWS if name in names]


def _value(text: str, kind: type, optional: bool) -> Any:
    """A hyper-parameter's value from its text, as its declared type."""
    if optional and text.lower() == "none":
        return None
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in ("true", "1")
    return kind(text)


def override_key(row: str, param: str) -> str:
    """A row's setting as `overrides` names it, ROW.PARAM (`--override=ROW.PARAM=VALUE`)."""
    return f"{row}.{param}"


def override_keys() -> list[str]:
    """Every setting an override can give, as ROW.PARAM."""
    return [
        override_key(row, param.name)
        for row in ATTACK_ROWS
        for param in get_attack(str(ROWS[row].attack)).declaration.parameters
    ]


def parse_overrides(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`ROW.PARAM=VALUE` settings that replace a row's (say, `cw.max_iterations=100`),
    typed as the row's attack declares them; every run records the settings it used."""
    overrides: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, equals, value = text.partition("=")
        row, dot, param = target.partition(".")
        if not (equals and dot) or row not in ATTACK_ROWS:
            raise ParameterError(
                f"overrides: {text!r} is not ROW.PARAM=VALUE with ROW one of "
                f"{', '.join(ATTACK_ROWS)}",
                "overrides",
            )
        entry = get_attack(str(ROWS[row].attack))
        declared = {p.name: p for p in entry.declaration.parameters}
        if param not in declared:
            raise ParameterError(
                f"overrides: {text!r}: {entry.name} takes {', '.join(declared)}", "overrides"
            )
        try:
            parsed = _value(value.strip(), declared[param].type, declared[param].optional)
        except ValueError as error:
            raise ParameterError(f"overrides: {text!r}: {error}", "overrides") from error
        overrides.setdefault(row, {})[param] = parsed
    return overrides


def row_attack(
    row: str, *, randomized: bool, overrides: Mapping[str, Mapping[str, Any]]
) -> tuple[str | None, dict[str, Any]]:
    """The catalog attack and given settings of a row in a scenario whose defense is
    randomized or fixed. The adaptive rows are EOT-PGD and APGD-EOT on a randomized
    defense; on a fixed one, PGD and plain APGD with the settings of the row that they
    take (PGD: all but the EOT samples; APGD takes them and, on a fixed defense,
    ignores them)."""
    spec = ROWS[row]
    params = {**spec.params, **overrides.get(row, {})}
    if spec.fixed is not None and not randomized:
        taken = get_attack(spec.fixed).defaults
        return spec.fixed, {name: value for name, value in params.items() if name in taken}
    return spec.attack, params


def row_title(attack: str | None, params: Mapping[str, Any], *, randomized: bool = True) -> str:
    """A row's label as it ran: FGSM-2, DeepFool, C&W, EOT-PGD-8 (adaptive), ...; APGD,
    one catalog attack on either defense, reads APGD-EOT on a `randomized` defense (EOT
    over its patterns) and APGD on a fixed one."""
    if attack is None:
        return "clean"
    epsilon = params.get("epsilon")
    if attack == "apgd":
        name, where = ("APGD-EOT", "") if randomized else ("APGD", " on the defense")
        return f"{name}-{epsilon:g}{where} (adaptive)" if epsilon is not None else name
    titles = {
        "fgsm": f"FGSM-{epsilon:g}" if epsilon is not None else "FGSM",
        "deepfool": "DeepFool",
        "cw": "C&W",
        "eot_pgd": f"EOT-PGD-{epsilon:g} (adaptive)" if epsilon is not None else "EOT-PGD",
        "pgd": f"PGD-{epsilon:g} on the defense (adaptive)" if epsilon is not None else "PGD",
    }
    return titles.get(attack, attack)


@dataclass(frozen=True)
class Column:
    """A model column of a rendered table; `paper` is the paper's model it compares with."""

    model: str
    title: str
    paper: str | None


# Accuracies as fractions in [0, 1] by (model, row); None or absent: not computed.
Measured = Mapping[tuple[str, str], tuple[float, float] | None]

_NUMBER = 6  # width of one number field
_MISSING = "-"
# What a column shows per side: ours, the paper's and the difference; ours only (a model
# the paper does not have); the paper's only (the paper's own table).
COMPARED, OURS, PAPER = ("ours", "paper", "diff"), ("ours",), ("paper",)


def _number(value: float | None, *, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return _MISSING.rjust(_NUMBER)
    return (f"{value:+.1f}" if sign else f"{value:.1f}").rjust(_NUMBER)


def _fields(ours: float | None, paper: float | None, shown: tuple[str, ...]) -> str:
    """One side of a cell: our accuracy and the paper's in %, their difference in points."""
    mine = None if ours is None else 100 * ours
    difference = None if mine is None or paper is None else mine - paper
    values = {
        "ours": _number(mine),
        "paper": _number(paper),
        "diff": _number(difference, sign=True),
    }
    return "".join(values[name] for name in shown)


def _line(label: str, width: int, cells: Sequence[str], widths: Sequence[int], centre: bool) -> str:
    fields = [
        text.center(size) if centre else text.rjust(size)
        for text, size in zip(cells, widths, strict=True)
    ]
    return (label.ljust(width) + "".join(" | " + f for f in fields)).rstrip()


def render_table(
    table: PaperTable,
    columns: Sequence[Column],
    measured: Measured,
    rows: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """The table in the paper's layout: per model column, target model and defense model
    (Table 1: without and with randomization), each as ours, the paper's and the
    difference in points; a model the paper does not have shows ours only, and the
    paper's own table follows.

    `rows` are (row name, label) pairs in order; cells not computed show as "-".
    """
    if not columns:
        raise ParameterError("a table needs at least one model column", "columns")
    shown = [COMPARED if column.paper else OURS for column in columns]
    lines = [f"Table {table.number}: top-1 accuracy (%), {table.caption}", *notes, ""]
    lines += _grid(table, columns, shown, measured, rows)
    if not all(column.paper for column in columns):
        lines += ["", render_paper_table(table)]
    return "\n".join(lines)


def render_paper_table(table: PaperTable) -> str:
    """The paper's own table: its four models and its numbers."""
    columns = [Column(model, MODEL_TITLES[model], model) for model in PAPER_MODELS]
    rows = [(row, row_title(ROWS[row].attack, ROWS[row].params)) for row in table.values]
    grid = _grid(table, columns, [PAPER] * len(columns), {}, rows)
    heading = f"The paper's Table {table.number} (ImageNet, {table.paper_images} images):"
    return "\n".join([heading, *grid])


def _grid(
    table: PaperTable,
    columns: Sequence[Column],
    shown: Sequence[tuple[str, ...]],
    measured: Measured,
    rows: Sequence[tuple[str, str]],
) -> list[str]:
    """The header and body lines of a table."""
    sides = (
        ("w/o randomization", "w randomization")
        if table.clean
        else ("target model", "defense model")
    )
    labels = [label for _, label in rows]
    width = max(len("Models"), *map(len, labels if not table.clean else sides))

    def side(column: Column, fields: tuple[str, ...], row: str, index: int) -> str:
        ours = measured.get((column.model, row))
        paper = table.paper(row, column.paper) if column.paper else None
        return _fields(
            None if ours is None else ours[index], None if paper is None else paper[index], fields
        )

    if table.clean:
        # Models across, the two sides down.
        widths = [max(len(c.title), _NUMBER * len(f)) for c, f in zip(columns, shown, strict=True)]
        lines = [
            _line("Models", width, [c.title for c in columns], widths, True),
            _line(
                "",
                width,
                ["".join(name.rjust(_NUMBER) for name in f) for f in shown],
                widths,
                False,
            ),
        ]
        for index, label in enumerate(sides):
            cells = [side(c, f, CLEAN, index) for c, f in zip(columns, shown, strict=True)]
            lines.append(_line(label, width, cells, widths, False))
        return lines
    halves = [
        max(len(sides[1]), _NUMBER * len(f), (len(c.title) - 3 + 1) // 2)
        for c, f in zip(columns, shown, strict=True)
    ]
    widths = [2 * half + 3 for half in halves]
    titles = ["".join(name.rjust(_NUMBER) for name in f) for f in shown]
    lines = [
        _line("Models", width, [c.title for c in columns], widths, True),
        _line("", width, [f"{sides[0]:^{h}} | {sides[1]:^{h}}" for h in halves], widths, True),
        _line(
            "",
            width,
            [f"{t:>{h}} | {t:>{h}}" for t, h in zip(titles, halves, strict=True)],
            widths,
            False,
        ),
    ]
    for row, label in rows:
        cells = [
            f"{side(c, f, row, 0):>{h}} | {side(c, f, row, 1):>{h}}"
            for c, f, h in zip(columns, shown, halves, strict=True)
        ]
        lines.append(_line(label, width, cells, widths, False))
    return lines
