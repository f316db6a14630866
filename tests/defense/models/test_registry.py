"""Every registry entry builds to its slim variable counts and is known to the downloader."""

import numpy as np
import pytest

from defense import download, models
from defense.models.registry import REGISTRY
from defense.models.slim import slim_variables

PAPER_AND_CHALLENGE_MODELS = {
    "ens_adv_inception_resnet_v2",
    "inception_resnet_v2",
    "inception_v3",
    "adv_inception_v3",
    "ens3_adv_inception_v3",
    "ens4_adv_inception_v3",
    "resnet_v2_101",
}


def test_registry_holds_the_papers_and_the_challenges_models():
    assert set(REGISTRY) == PAPER_AND_CHALLENGE_MODELS
    assert [spec.name for spec in download.select(["all"])] == list(REGISTRY)


@pytest.mark.parametrize("name", ["ens_adv_inception_resnet_v2", "inception_v3", "resnet_v2_101"])
def test_variable_counts_match_the_slim_graphs(name):
    spec = REGISTRY[name]
    variables = slim_variables(models.build(name))
    assert len(variables) == spec.num_variables
    assert sum(int(np.prod(v.shape)) for v in variables.values()) == spec.num_parameters


def test_entries_declare_their_checkpoint():
    for spec in REGISTRY.values():
        assert spec.tarball.endswith(".tar.gz") and spec.url.startswith(
            "https://download.tensorflow"
        )
        assert spec.checkpoint_file.endswith(".ckpt") and spec.default_image_size == 299
    assert REGISTRY["resnet_v2_101"].has_aux is False
    assert all(REGISTRY[name].has_aux for name in PAPER_AND_CHALLENGE_MODELS - {"resnet_v2_101"})


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_outputs_are_float32_in_every_precision(precision):
    images = np.zeros((1, 299, 299, 3), np.float32)
    for name in ("ens_adv_inception_resnet_v2", "inception_v3", "resnet_v2_101"):
        outputs = models.build(name, precision=precision)(images)
        assert {str(value.dtype.name) for value in outputs.values()} == {"float32"}, name


def test_build_options_a_net_does_not_take_are_refused_by_name():
    from defense.common.errors import ParameterError
    from defense.models import get_spec

    get_spec("ens_adv_inception_resnet_v2").check_options({"aux_head": "tf_models"})
    with pytest.raises(ParameterError, match=r"^aux_head does not apply to resnet_v2_101$"):
        get_spec("resnet_v2_101").check_options({"aux_head": "tf_models"})
