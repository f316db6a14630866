"""tf_slim's own TF1 graphs as live references for the nets tf_slim ships.

tf_slim 1.1.0 builds on TF 2.21 only with tf-keras installed and one module
alias (its import path moved inside tf-keras); this is the one place that
applies it. Graphs run in a private `tf.Graph` with a TF1 session, restoring a
name-based checkpoint with `tf.compat.v1.train.Saver`, so nothing here shares
code with `defense`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType

import numpy as np
import tensorflow as tf

GraphBuilder = Callable[[tf.Tensor], Mapping[str, tf.Tensor]]


def tf_slim() -> ModuleType:
    """Import tf_slim after aliasing the tf-keras module it expects."""
    alias = "tf_keras.legacy_tf_layers.normalization"
    if alias not in sys.modules:
        sys.modules[alias] = importlib.import_module("tf_keras.src.legacy_tf_layers.normalization")
    return importlib.import_module("tf_slim")


def variable_shapes(build: GraphBuilder, image_size: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the variables the slim graph creates."""
    graph = tf.Graph()
    with graph.as_default():
        build(tf.compat.v1.placeholder(tf.float32, [1, image_size, image_size, 3]))
        return {v.op.name: tuple(v.shape.as_list()) for v in tf.compat.v1.global_variables()}


def run(build: GraphBuilder, checkpoint_prefix: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the slim graph on `images`, with variables restored from the checkpoint."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, images.shape)
        outputs = build(inputs)
        saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables())
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, checkpoint_prefix)
            return session.run(dict(outputs), feed_dict={inputs: images})
