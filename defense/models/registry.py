"""The model zoo: one entry per slim classifier, with its checkpoint and builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from defense.models import inception_resnet_v2

CHECKPOINT_BASE_URL = "http://download.tensorflow.org/models/"


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build a slim net and where its official weights live."""

    name: str
    build: Callable[..., keras.Model]
    checkpoint_file: str
    tarball: str
    default_image_size: int
    has_aux: bool
    num_variables: int
    num_parameters: int
    tarball_sha256: str | None = None

    @property
    def url(self) -> str:
        """Official download address of the checkpoint tarball."""
        return CHECKPOINT_BASE_URL + self.tarball


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="ens_adv_inception_resnet_v2",
            build=inception_resnet_v2.build,
            checkpoint_file="ens_adv_inception_resnet_v2.ckpt",
            tarball="ens_adv_inception_resnet_v2_2017_08_18.tar.gz",
            default_image_size=299,
            has_aux=True,
            num_variables=908,
            num_parameters=59_244_594,
        ),
        ModelSpec(
            name="inception_resnet_v2",
            build=inception_resnet_v2.build,
            checkpoint_file="inception_resnet_v2_2016_08_30.ckpt",
            tarball="inception_resnet_v2_2016_08_30.tar.gz",
            default_image_size=299,
            has_aux=True,
            num_variables=908,
            num_parameters=59_244_594,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """Registry entry for `name`, with the known names in the error."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}"
        ) from None
