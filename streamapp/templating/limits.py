"""The bounds of one render: sizes, integer bits, work, loop turns, CPU time; and the errors that enforce them."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

MAX_SOURCE_CHARS = 65_536
MAX_OUTPUT_CHARS = 262_144
#: Longest value (characters when printed, items of a collection) one operation may build.
MAX_VALUE_SIZE = MAX_OUTPUT_CHARS
#: Largest integer a template may compute, in bits (about 308 digits: wording counts money).
MAX_INT_BITS = 1024
#: Work one render may do in all: characters it builds, prints or inspects, plus one per step.
MAX_WORK = 10_000_000
#: Loop turns one render may run, all loops together.
MAX_LOOP_ITERATIONS = 1_000_000
#: CPU time one render may take (this thread's, so other load does not count): the backstop
#: for work the budget cannot count (a comparison of two long strings inside a loop, say).
MAX_RENDER_SECONDS = 2.0


class Refused(SecurityError):
    """Something shop wording may not do; ``lineno`` when it is known before the template runs."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


class OverLimit(SecurityError):
    """An operation, or the render as a whole, would go over one of the limits."""


# -- the budget of one render ---------------------------------------------------------------------
@dataclass
class Budget:
    deadline: float
    work: int = 0
    iterations: int = 0
    charges: int = 0


BUDGET: ContextVar[Budget | None] = ContextVar("streamapp_template_budget", default=None)


def spend(work: int, iterations: int = 0) -> None:
    """Charge the current render; OverLimit once it has done too much."""
    budget = BUDGET.get()
    if budget is None:  # not inside render(): only the per-operation limits apply
        return
    budget.work += work
    budget.iterations += iterations
    if budget.work > MAX_WORK:
        raise OverLimit(f"the template does more than {MAX_WORK:,} units of work (characters built, steps)")
    if budget.iterations > MAX_LOOP_ITERATIONS:
        raise OverLimit(f"loops run more than {MAX_LOOP_ITERATIONS:,} times")
    budget.charges += 1
    # Reading the CPU clock costs a system call: every 256 charges is often enough.
    if not budget.charges % 256 and time.thread_time() > budget.deadline:
        raise OverLimit(f"rendering takes more than {MAX_RENDER_SECONDS:g} seconds of CPU time")


TEXT = (str, bytes)
COLLECTIONS = (list, tuple, set, frozenset, dict)


def printed_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """About how many characters printing ``value`` makes (items for a collection: at least
    one each); stops counting past ``limit``. 0 for what cannot be printed at all."""
    if isinstance(value, TEXT):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, COLLECTIONS):
        total = 2
        for item in value.items() if isinstance(value, dict) else value:
            total += printed_size(item, limit - total) + 2
            if total > limit:
                break
        return total
    return 0


def checked(value: Any, what: str) -> Any:
    """``value``, which ``what`` made, once it is within the limits; its size is charged."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise OverLimit(f"{what} makes a number of {value.bit_length():,} bits; the limit is {MAX_INT_BITS:,}")
    size = printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise OverLimit(f"{what} makes a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    spend(1 + size)
    return value


def projected(size: int, what: str) -> None:
    """Refuse, before it runs, an operation that would build ``size`` characters or items."""
    if size > MAX_VALUE_SIZE:
        raise OverLimit(f"{what} would make {size:,} characters or items; the limit is {MAX_VALUE_SIZE:,}")


def check_input(value: Any, what: str, *, sizes: bool = True) -> None:
    """What a call or filter gets is within the limits; with ``sizes``, a number (which may
    size what it builds: a width, a count) is at most MAX_VALUE_SIZE. Its size is charged."""
    if sizes and isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_SIZE:
        raise OverLimit(f"{what} gets a number over {MAX_VALUE_SIZE:,}")
    size = printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise OverLimit(f"{what} gets a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    spend(1 + size)
