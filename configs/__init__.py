"""The shipped defense configs, installed as package data of `defense.configs`.

This folder is the top-level `configs/` of the repository; `setup.py` maps it to
the package `defense.configs`, so an installed copy finds the JSON files with
`importlib.resources` and needs no source tree.
"""
