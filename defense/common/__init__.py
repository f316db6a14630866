"""Plumbing shared by `defense` and `attacks`: errors and exit codes (`errors`), atomic
and bounded file handling (`files`), image I/O and pixel <-> model-input conversion
(`images`), the command-line helpers (`cli`) and lazy package exports (`exports`).

Nothing here knows the defense: it imports only the standard library, NumPy, Pillow
and absl (TensorFlow only inside the functions that need it).
"""
