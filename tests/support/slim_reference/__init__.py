"""Test-only reference implementations of slim nets, independent of the `defense` package.

They exist to check the Keras re-implementations and the checkpoint loader
against a second, separately written forward pass.
"""
