"""The model zoo: one entry per slim classifier, with its checkpoint and builder."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import keras

from defense.common.errors import ParameterError
from defense.models import inception_resnet_v2, inception_v3, resnet_v2

CHECKPOINT_BASE_URL = "https://download.tensorflow.org/models/"


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
    checkpoint_sha1: str | None = None

    def check_options(self, options: Mapping[str, object]) -> None:
        """Refuse build options this net does not take (aux_head is Inception-ResNet-v2's)."""
        taken = [
            name
            for name, param in inspect.signature(self.build).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        foreign = sorted(set(options) - set(taken))
        if foreign:
            raise ParameterError(f"{', '.join(foreign)} does not apply to {self.name}", *foreign)

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
        *(
            ModelSpec(
                name=name,
                build=inception_v3.build,
                checkpoint_file=checkpoint_file,
                tarball=tarball,
                default_image_size=299,
                has_aux=True,
                num_variables=388,
                num_parameters=27_182_194,
                checkpoint_sha1=sha1,
            )
            for name, checkpoint_file, tarball, sha1 in (
                (
                    "inception_v3",
                    "inception_v3.ckpt",
                    "inception_v3_2016_08_28.tar.gz",
                    "606fd6953c58c817c56fd3bc2f0384fc2ecaba92",
                ),
                (
                    "adv_inception_v3",
                    "adv_inception_v3.ckpt",
                    "adv_inception_v3_2017_08_18.tar.gz",
                    None,
                ),
                (
                    "ens3_adv_inception_v3",
                    "ens3_adv_inception_v3.ckpt",
                    "ens3_adv_inception_v3_2017_08_18.tar.gz",
                    None,
                ),
                (
                    "ens4_adv_inception_v3",
                    "ens4_adv_inception_v3.ckpt",
                    "ens4_adv_inception_v3_2017_08_18.tar.gz",
                    None,
                ),
            )
        ),
        ModelSpec(
            name="resnet_v2_101",
            build=resnet_v2.build,
            checkpoint_file="resnet_v2_101.ckpt",
            tarball="resnet_v2_101_2017_04_14.tar.gz",
            default_image_size=299,
            has_aux=False,
            num_variables=544,
            num_parameters=44_677_609,
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
