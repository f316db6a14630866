"""The card's cells: which cells a card has, the store that keeps them as they finish
(settings and seed checked, damaged files refused), and a card interrupted and resumed
from its cells equal to the card computed in one go."""

import dataclasses
import json

import numpy as np
import pytest

from attacks.robustness.card import evaluate_robustness
from attacks.robustness.cells import (
    STRONGEST,
    CardCell,
    CardSettings,
    CellResult,
    CellStore,
    card_cells,
)
from attacks.robustness.protocol import ATTACKS
from defense.common.errors import InputError, ParameterError


def test_cells_cover_every_shard_and_put_attacks_before_strongest():
    settings = CardSettings(
        sweep_samples=(1, 2),
        sweep_iterations=(5,),
        cosine_samples=(1,),
        epsilons=(8, 16),
        shard_size=4,
    )
    cells = card_cells(settings, 10)
    assert len({cell.key for cell in cells}) == len(cells)
    shards = sorted({(cell.shard, cell.start, cell.stop) for cell in cells})
    assert shards == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    per_shard = 1 + len(ATTACKS) + 1 + 2 + 1 + 2 + 1
    assert len(cells) == 3 * per_shard
    for shard in range(3):
        steps = [cell.step for cell in cells if cell.shard == shard]
        assert steps.index(STRONGEST) > max(steps.index(attack) for attack in ATTACKS)
    assert [cell.key for cell in cells[:2]] == ["clean.shard0", f"{next(iter(ATTACKS))}.shard0"]
    assert CardCell("samples", 5.0, 1, 4, 8).key == "samples=5.shard1"
    assert len(card_cells(CardSettings(), 3)) == len(card_cells(CardSettings(shard_size=3), 3))


def test_bad_settings():
    with pytest.raises(ParameterError) as error:
        CardSettings(shard_size=0)
    assert error.value.parameters == ("shard_size",)


def correct(rows):
    return np.array([[c == "1" for c in row] for row in rows])


def test_store_keeps_cells_and_refuses_other_settings_seeds_and_damage(tmp_path):
    settings = {"model": "digits", "card": {"redraws": 2}}
    store = CellStore(tmp_path, settings, None)
    seed = store.seed
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == seed
    attack = CardCell(next(iter(ATTACKS)), None, 0, 0, 3)
    adversarials = np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3)
    store.add(attack, CellResult(1.5, correct(["101", "001"]), None, adversarials))
    cosine = CardCell("cosine", 4.0, 0, 0, 3)
    store.add(cosine, CellResult(0.5, None, np.array([0.1, 0.2, 0.3])))

    again = CellStore(tmp_path, settings, None)
    assert again.seed == seed
    found = again.result(attack, 2, (2, 2, 3))
    assert found.seconds == 1.5 and found.correct.tolist() == correct(["101", "001"]).tolist()
    assert np.array_equal(found.adversarials, adversarials)
    assert again.result(attack, 2).adversarials is None
    with pytest.raises(InputError, match="is not the adversarials"):
        again.result(attack, 2, (2, 2, 1))
    assert again.result(cosine, 2).cosines.tolist() == [0.1, 0.2, 0.3]
    assert again.result(CardCell("clean", None, 0, 0, 3), 2) is None

    with pytest.raises(InputError, match="other settings") as error:
        CellStore(tmp_path, {**settings, "model": "other"}, None)
    assert "model: 'digits' in the file, 'other' now" in str(error.value)
    with pytest.raises(InputError, match=f"seed: {seed} in the file, {seed + 1} now"):
        CellStore(tmp_path, settings, seed + 1)

    with pytest.raises(InputError, match="is not a finished cell"):
        again.result(attack, 3)
    (tmp_path / f"{attack.key}.json").write_text('{"seconds": 1, "correct": ["1x1", "001"]}')
    with pytest.raises(InputError, match="is not a finished cell"):
        again.result(attack, 2)
    (tmp_path / f"{attack.key}.json").write_text("{")
    with pytest.raises(InputError, match="cannot read"):
        again.result(attack, 2)
    (tmp_path / "settings.json").write_text("[]")
    with pytest.raises(InputError, match="not written by a robustness card"):
        CellStore(tmp_path, settings, None)


def without_timings(card):
    return dataclasses.replace(
        card,
        attacks=tuple(dataclasses.replace(result, seconds=0.0) for result in card.attacks),
    )


def stop_after(count):
    """A progress hook that interrupts the card once `count` cells are computed."""

    def progress(done, total, key):
        if done == count:
            raise KeyboardInterrupt

    return progress


@pytest.mark.slow
def test_an_interrupted_card_resumes_to_the_card_computed_in_one_go(
    card, digits, small_defense, sample, tiny_card, tmp_path
):
    """Stopped after the attacks, before `strongest` (which then reads the attacks'
    adversarials back from the store): the resumed card is the one-go card."""
    images, labels = (a[:10] for a in sample)
    arguments = {
        "seed": 0,
        "checkpoint_sha256": "ab" * 32,
        "cells_dir": tmp_path,
        "identity": {"model": "digits"},
        **tiny_card,
    }
    done = 1 + len(ATTACKS)
    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(
            digits.model, small_defense, images, labels, progress=stop_after(done), **arguments
        )
    assert len(list(tmp_path.glob("*.shard0.json"))) == done
    assert len(list(tmp_path.glob("*.npy"))) == len(ATTACKS)
    reports = []
    resumed = evaluate_robustness(
        digits.model,
        small_defense,
        images,
        labels,
        progress=lambda *report: reports.append(report),
        **{**arguments, "seed": None},
    )
    sweeps = {name: tiny_card[name] for name in ("sweep_samples", "sweep_iterations")}
    sweeps |= {name: tiny_card[name] for name in ("cosine_samples", "epsilons")}
    left = len(card_cells(CardSettings(**sweeps), 10)) - done
    assert reports[0] == (0, left, None) and reports[-1] == (left, left, "strongest.shard0")
    assert [done for done, _, _ in reports] == list(range(left + 1))
    assert without_timings(resumed) == without_timings(card)
    ran = json.loads((tmp_path / "strongest.shard0.json").read_text())["ran"]
    assert ran["attempts"] == 1 and ran["node"] == "local" and ran["seconds"] > 0


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_the_card_on_ray_is_the_local_card(card, digits, small_defense, sample, tiny_card):
    """Cells as Ray tasks on a local instance of 2 CPUs (the model shipped with each
    cell): the numbers of the card computed in one go in this process."""
    from attacks.execution.executor import RayExecutor

    images, labels = (a[:10] for a in sample)
    executor = RayExecutor(num_cpus=2)
    try:
        on_ray = evaluate_robustness(
            digits.model,
            small_defense,
            images,
            labels,
            seed=0,
            checkpoint_sha256="ab" * 32,
            executor=executor,
            **tiny_card,
        )
    finally:
        executor.close()
    assert without_timings(on_ray) == without_timings(card)
