"""Numbers on the command line: finite, within documented bounds, or one clear line.

click's FloatRange lets ``nan`` through (every comparison with nan is false) and its usage
errors print three lines; a bad number here is a `ConfigError`, which the CLI prints as one
line (``spotsafe: --grace-s = nan: must be ...``) and exits 2.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import click

from spotsafe.errors import ConfigError

__all__ = ["Number"]

if TYPE_CHECKING:
    _ParamType = click.ParamType[float]
else:  # click before 8.3 has no subscriptable ParamType
    _ParamType = click.ParamType


class Number(_ParamType):
    """An int or float option in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Example:
        >>> Number(float, 0, 3600, low_open=True).describe()
        'a finite number > 0 and <= 3600'
    """

    def __init__(
        self, kind: type[int] | type[float], low: float, high: float, *, low_open: bool = False
    ) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "seconds"

    def describe(self) -> str:
        if self.kind is int:
            noun, low, high = "an integer", str(int(self.low)), str(int(self.high))
        else:
            noun, low, high = "a finite number", f"{self.low:g}", f"{self.high:g}"
        return f"{noun} {'>' if self.low_open else '>='} {low} and <= {high}"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number: float | None = None
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            with contextlib.suppress(ValueError, OverflowError):  # not a number: refused below
                number = self.kind(str(value).strip())
        if number is None or not self._within(number):
            name = param.opts[0] if param is not None and param.opts else "value"
            # Not click's BadParameter: that prints usage; a user error is one line.
            raise ConfigError(f"{name} = {value}: must be {self.describe()}")
        return number

    def _within(self, number: float) -> bool:
        if not math.isfinite(number) or number > self.high:
            return False
        return number > self.low if self.low_open else number >= self.low
