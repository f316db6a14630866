"""attacks.benchmark.projection: the piece counts of the full competition and the
pass counts per attack and table. (The toy competition's equality on both executors
is tests/attacks/competition/test_competition_cluster.py's, on the command.)"""

import pytest

from attacks.benchmark import projection
from attacks.benchmark.executors import paper_passes


def test_the_full_competition_has_the_clouds_pieces():
    # 161 attacks x 50 batches; each batch's pool of 161 x 100 images in 161 parts,
    # classified by 110 defenses.
    assert projection.competition_pieces() == (161 * 50, 110 * 50 * 161)
    assert projection.competition_pieces(defenses=2, attacks=3, images=40, batch=10) == (12, 24)
    workload = projection.competition(500.0, 100.0, 1.0, "x")
    assert workload.units == 8050 + 885500
    assert workload.device_seconds == 8050 * 501 + 885500 * 101
    assert workload.days_on(10) == pytest.approx(workload.device_seconds / 10 / 86400)


def test_pass_counts_follow_the_attack_settings():
    assert projection.attack_passes("fgsm", {}) == 3
    assert projection.attack_passes("deepfool", {"max_iter": 50, "nb_candidate": 10}) == 1500
    assert projection.attack_passes("eot_pgd", {"steps": 10, "samples": 30}) == 900
    assert projection.attack_passes("apgd", {"n_iter": 100, "samples": 20}) == 6000
    with pytest.raises(ValueError, match="no pass count for attack 'di_fgsm'"):
        projection.attack_passes("di_fgsm", {})
    rows = {"clean": (None, {}), "fgsm-2": ("fgsm", {})}
    assert projection.table_passes(rows, attacked_patterns=21, defense_passes=3) == 3 + 63 + 3


def test_the_paper_tables_in_passes():
    tables = paper_passes()
    assert set(tables) == {1, 2, 3, 4, 5, 6}
    assert tables[1] == (5000, 3)  # the clean images through 3 runs of one pattern
    assert tables[2] == tables[3]  # one pattern attacked, same rows
    assert tables[4][0] == 500 and tables[4][1] > 10 * tables[3][1]  # through 21 patterns
