"""Scores of a run: the dev toolkit's matrices and rankings, the paper's eq. (5)
normalised defense score, `scores.json` and `summary.md`.

Matrices have attacks as rows and defenses as columns (first row: an empty corner
cell, then the defense names). A defense's score is its correct classifications over
the images of every attack, non-targeted and targeted; eq. (5) divides it by the
number of adversarial images, so an image it did not classify counts as wrong. A
non-targeted attack's score is images x defenses minus its correct classifications
(an image it did not write counts for it, as in the toolkit); a targeted attack's,
its target hits. Names are sorted, and rankings too on ties. An attack's success
rate counts over its (adversarial image, defense) pairs those misclassified (for a
targeted attack: classified as the target), so an unclassified image is a success.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks.competition.batches import Dataset
from attacks.competition.pieces import AttackPiece, DefensePiece
from defense.common.errors import listing
from defense.common.files import write_csv_atomic, write_text_atomic

ACCURACY_ON_ATTACKS = "accuracy_on_attacks.csv"
ACCURACY_ON_TARGETED_ATTACKS = "accuracy_on_targeted_attacks.csv"
HIT_TARGET_CLASS = "hit_target_class.csv"
DEFENSE_RANKING = "defense_ranking.csv"
ATTACK_RANKING = "attack_ranking.csv"
TARGETED_ATTACK_RANKING = "targeted_attack_ranking.csv"
ALL_CLASSIFICATION = "all_classification.csv"
SCORES = "scores.json"
SUMMARY = "summary.md"
OUTPUT_FILES = (
    ACCURACY_ON_ATTACKS,
    ACCURACY_ON_TARGETED_ATTACKS,
    HIT_TARGET_CLASS,
    DEFENSE_RANKING,
    ATTACK_RANKING,
    TARGETED_ATTACK_RANKING,
    SCORES,
    SUMMARY,
)
CLASSIFICATION_HEADER = (
    "AttackName",
    "IsTargeted",
    "DefenseName",
    "ImageId",
    "PredictedLabel",
    "TrueLabel",
    "TargetClass",
)


@dataclass(frozen=True)
class Classification:
    """A defense's label for the adversarial version of `image_id` made by `attack`."""

    defense: str
    attack: str
    targeted: bool
    image_id: str
    predicted: int


@dataclass
class Results:
    """Everything a run found, to be scored."""

    dataset: Dataset
    attacks: list[str]
    targeted_attacks: list[str]
    defenses: list[str]
    attack_pieces: list[AttackPiece]
    defense_pieces: list[DefensePiece]
    classifications: list[Classification]
    settings: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _matrix(rows: list[str], columns: list[str], counts: Counter) -> list[list[object]]:
    return [["", *columns], *([row, *(counts[row, column] for column in columns)] for row in rows)]


def _ranking(header: tuple[str, str], scores: Mapping[str, int]) -> list[list[object]]:
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [list(header), *([name, score] for name, score in ordered)]


@dataclass
class Scores:
    """The result files of a run, ready to write."""

    tables: dict[str, list[list[object]]]
    classification: list[list[object]]
    report: dict[str, Any]

    def problems(self) -> list[str]:
        """What went wrong: skipped submissions, ids without images, pieces' problems."""
        report = self.report
        skipped = report["skipped_submissions"]
        problems = [f"{folder}: skipped: {reason}" for folder, reason in skipped.items()]
        without = report["dataset"]["ids_without_files"]
        if without:
            problems.append(f"{len(without)} dataset id(s) have no PNG: {listing(without)}")
        return problems + report["problems"]

    def write(self, output_dir: Path, *, save_all_classification: bool) -> None:
        """Write every result file into `output_dir`, each atomically."""
        for name, rows in self.tables.items():
            write_csv_atomic(output_dir / name, rows)
        stale = output_dir / ALL_CLASSIFICATION
        if save_all_classification:
            write_csv_atomic(stale, self.classification)
        elif os.path.lexists(stale) and not stale.is_dir():
            stale.unlink()  # an earlier run's, which these results would seem to come with
        write_text_atomic(output_dir / SCORES, json.dumps(self.report, indent=2) + "\n")
        write_text_atomic(output_dir / SUMMARY, summary_markdown(self.report, self.problems()))


def _piece_rows(pieces: Sequence[AttackPiece] | Sequence[DefensePiece]) -> list[dict[str, Any]]:
    rows = []
    for piece in pieces:
        row: dict[str, Any] = {"batch": piece.batch}
        if isinstance(piece, DefensePiece):
            row["part"] = piece.part
        row |= {
            "epsilon": piece.epsilon,
            "images": piece.size,
            "seconds": piece.outcome.seconds,
            "status": piece.outcome.status,
            "reason": piece.outcome.describe() if piece.outcome.status != "ok" else None,
        }
        if isinstance(piece, AttackPiece):
            row["written"] = len(piece.output.images)
        rows.append(row)
    return rows


def score(results: Results) -> Scores:
    """The matrices, rankings, classification rows and report of `results`."""
    truth = {image.image_id: image for image in results.dataset.images}
    correct: Counter = Counter()  # (attack, targeted, defense) -> correct classifications
    hits: Counter = Counter()  # (attack, defense) -> target class hits
    rows: list[list[object]] = [list(CLASSIFICATION_HEADER)]
    order = sorted(
        results.classifications, key=lambda c: (c.defense, c.targeted, c.attack, c.image_id)
    )
    for item in order:
        image = truth[item.image_id]
        correct[item.attack, item.targeted, item.defense] += item.predicted == image.true_label
        if item.targeted:
            hits[item.attack, item.defense] += item.predicted == image.target_class
        rows.append(
            [
                item.attack,
                str(item.targeted),
                item.defense,
                item.image_id,
                item.predicted,
                image.true_label,
                image.target_class,
            ]
        )
    images_of: Counter = Counter()  # (attack, targeted) -> adversarial images
    for piece in results.attack_pieces:
        images_of[piece.attack, piece.targeted] += len(piece.output.images)
    defenses, count = results.defenses, len(results.dataset.images)
    by_kind = {False: results.attacks, True: results.targeted_attacks}
    matrices = {
        targeted: Counter({(a, d): correct[a, targeted, d] for a in names for d in defenses})
        for targeted, names in by_kind.items()
    }
    hit_matrix = Counter({(a, d): hits[a, d] for a in results.targeted_attacks for d in defenses})
    defense_scores = {
        d: sum(matrices[t][a, d] for t, names in by_kind.items() for a in names) for d in defenses
    }
    attack_scores = {
        a: count * len(defenses) - sum(matrices[False][a, d] for d in defenses)
        for a in results.attacks
    }
    targeted_scores = {a: sum(hit_matrix[a, d] for d in defenses) for a in results.targeted_attacks}
    tables = {
        ACCURACY_ON_ATTACKS: _matrix(results.attacks, defenses, matrices[False]),
        ACCURACY_ON_TARGETED_ATTACKS: _matrix(results.targeted_attacks, defenses, matrices[True]),
        HIT_TARGET_CLASS: _matrix(results.targeted_attacks, defenses, hit_matrix),
        DEFENSE_RANKING: _ranking(("DefenseName", "Score"), defense_scores),
        ATTACK_RANKING: _ranking(("AttackName", "Score"), attack_scores),
        TARGETED_ATTACK_RANKING: _ranking(("AttackName", "Score"), targeted_scores),
    }
    adversarial_images = sum(images_of.values())
    report: dict[str, Any] = {
        "settings": results.settings,
        "dataset": {
            "images": count,
            "ids_without_files": list(results.dataset.ids_without_files),
        },
        "defenses": {},
        "attacks": {},
        "targeted_attacks": {},
        "skipped_submissions": results.skipped,
        "problems": results.problems,
    }
    for d in defenses:
        runs = [piece for piece in results.defense_pieces if piece.defense == d]
        classified = sum(len(piece.output.labels) for piece in runs)
        report["defenses"][d] = {
            "score": defense_scores[d],
            "adversarial_images": adversarial_images,
            "normalised_score": _ratio(defense_scores[d], adversarial_images),
            "correct_on_attacks": sum(matrices[False][a, d] for a in results.attacks),
            "correct_on_targeted_attacks": sum(
                matrices[True][a, d] for a in results.targeted_attacks
            ),
            "hit_target_class": sum(hit_matrix[a, d] for a in results.targeted_attacks),
            "unclassified": adversarial_images - classified,
            "malformed_rows": sum(piece.output.malformed_rows for piece in runs),
            "unknown_rows": sum(len(piece.output.unknown_names) for piece in runs),
            "accuracy_on_attacks": {
                a: _ratio(matrices[False][a, d], images_of[a, False]) for a in results.attacks
            },
            "accuracy_on_targeted_attacks": {
                a: _ratio(matrices[True][a, d], images_of[a, True])
                for a in results.targeted_attacks
            },
            "seconds": sum(piece.outcome.seconds for piece in runs),
            "pieces": _piece_rows(runs),
        }
    for targeted, names in by_kind.items():
        for a in names:
            pieces = [p for p in results.attack_pieces if p.attack == a and p.targeted == targeted]
            made = [clipped for piece in pieces for clipped in piece.output.images.values()]
            pairs = len(made) * len(defenses)
            if targeted:
                success = _ratio(targeted_scores[a], pairs)
            else:
                wrong = pairs - sum(matrices[False][a, d] for d in defenses)
                success = _ratio(wrong, pairs)
            section = "targeted_attacks" if targeted else "attacks"
            report[section][a] = {
                "score": targeted_scores[a] if targeted else attack_scores[a],
                "images": len(made),
                "missing": count - len(made),
                "success_rate": success,
                "mean_linf": _mean([clipped.linf for clipped in made]),
                "mean_l2": _mean([clipped.l2 for clipped in made]),
                "seconds": sum(piece.outcome.seconds for piece in pieces),
                "pieces": _piece_rows(pieces),
            }
    return Scores(tables, rows, report)


def plain(text: str) -> str:
    """Text from a submission (a name, a line of its stderr) as one printable line:
    control characters and line breaks escaped, never written raw into Markdown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(value: object) -> str:
    """A Markdown table cell: floats to 3 decimals, no value as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return plain(str(value)).replace("|", "\\|")


def _time_limit(limit: float | None) -> str:
    return f"time limit {limit:g} s per piece" if limit else "no time limit"


def _failed(pieces: Sequence[Mapping[str, Any]]) -> str:
    failed = sum(piece["status"] != "ok" for piece in pieces)
    return f"{failed}/{len(pieces)}"


def summary_markdown(report: Mapping[str, Any], problems: Sequence[str]) -> str:
    """The report as Markdown tables: defenses, then attacks, then what went wrong."""
    settings, dataset = report["settings"], report["dataset"]
    lines = [
        "# Competition results",
        "",
        f"{dataset['images']} images in batches of {settings['batch_size']}; epsilon "
        f"{settings['epsilon']}; {_time_limit(settings['time_limit'])}; "
        f"{settings['runtime']} runtime.",
        "",
        "## Defenses",
        "",
    ]
    attacks = [(name, False) for name in report["attacks"]]
    attacks += [(name, True) for name in report["targeted_attacks"]]
    header = ["Defense", "Score", "Eq. (5) score"]
    header += [f"{name}{' (targeted)' if targeted else ''}" for name, targeted in attacks]
    header += ["Unclassified", "Malformed rows", "Time (s)", "Failed pieces"]
    lines += ["| " + " | ".join(map(_cell, header)) + " |", "|---" * len(header) + "|"]
    for name, entry in report["defenses"].items():
        per_attack = [
            entry["accuracy_on_targeted_attacks" if targeted else "accuracy_on_attacks"][attack]
            for attack, targeted in attacks
        ]
        cells = [name, entry["score"], entry["normalised_score"], *per_attack]
        cells += [entry["unclassified"], entry["malformed_rows"], entry["seconds"]]
        cells.append(_failed(entry["pieces"]))
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", "Per attack: accuracy of the defense on its images.", "", "## Attacks", ""]
    header = ["Attack", "Targeted", "Score", "Success rate", "Mean L∞", "Mean L2"]
    header += ["Images", "Missing", "Time (s)", "Failed pieces"]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, targeted in attacks:
        entry = report["targeted_attacks" if targeted else "attacks"][name]
        cells = [name, "yes" if targeted else "no", entry["score"], entry["success_rate"]]
        cells += [entry["mean_linf"], entry["mean_l2"], entry["images"], entry["missing"]]
        cells += [entry["seconds"], _failed(entry["pieces"])]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", "Distances in pixel units (0..255), after clipping.", ""]
    lines += ["## Problems", ""]
    lines += [f"- {plain(problem)}" for problem in problems] or ["None."]
    return "\n".join(lines) + "\n"
