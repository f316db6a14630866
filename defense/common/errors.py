"""The project's own errors: bad arguments (naming the Python parameters they are about,
so that a shell can say its flags) and unusable input or output locations.

Library code says what is wrong in terms of its own parameters (`max_epsilon must
be in (0, 255]`); a command-line shell, whose flags may be spelled differently,
shows the same message in its own terms (`--max_epsilon must be in (0, 255]`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# The most items a message lists (`listing`).
SHOWN = 10


def listing(items: Sequence[str]) -> str:
    """At most `SHOWN` items for a message, and how many more there are."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


class ParameterError(ValueError):
    """A bad argument; `parameters` are the parameter names its message mentions, each
    only ever as the parameter (so a message names a word such as "config" only where
    it means the parameter)."""

    def __init__(self, message: str, *parameters: str) -> None:
        super().__init__(message)
        self.message = message
        self.parameters = parameters

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with every mention of a parameter replaced by `spell(name)`."""
        if not self.parameters:
            return self.message
        names = "|".join(sorted(map(re.escape, self.parameters), key=len, reverse=True))
        # Whole words only, and never inside a path (/data/output_dir/run stays as it is).
        pattern = rf"(?<![\w/-])(?:{names})(?![\w/])"
        return re.sub(pattern, lambda m: spell(m.group()), self.message)


class InputError(ValueError):
    """The input or output location as a whole is unusable."""
