"""How :mod:`streamapp.faust_fixes` patches Faust: each workaround once, and only on what it was written for.

**The guard.** Each fix wraps a method and relies on what that method and its neighbours do
inside, so it holds only for the versions it was verified with. ``apply()`` refuses to start
(:class:`~streamapp.errors.UnverifiedDependencyError`) when faust-streaming, mode-streaming or
aiokafka is not the version in :data:`VERIFIED_VERSIONS`, unless ``STREAMAPP_ALLOW_UNVERIFIED_FAUST``
is set (for testing an upgrade: a WARNING then names each mismatch). Each fix also checks the
parameters of the method it wraps; a changed signature is refused even with the override: the
wrapper would call it wrongly, or not be called as it expects.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from typing import Any

from streamapp.errors import UnverifiedDependencyError

logger = logging.getLogger(__name__)

#: Set on every installed wrapper, so that ``apply()`` installs each one once.
_APPLIED = "_streamapp_faust_fix"

#: A method being wrapped, and its wrapper.
Method = Callable[..., Any]

#: The versions every workaround was written for and verified with (``constraints.txt`` pins the same).
VERIFIED_VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

#: The setting (``Settings.allow_unverified_faust``) that lets a worker start on other versions.
OVERRIDE = "STREAMAPP_ALLOW_UNVERIFIED_FAUST"


def version_mismatches() -> list[str]:
    """``"<package> <installed> installed, <tested> tested"`` for each package not at its verified version."""
    mismatches = []
    for package, tested in VERIFIED_VERSIONS.items():
        try:
            found = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found = "(not installed)"
        if found != tested:
            mismatches.append(f"{package} {found} installed, {tested} tested")
    return mismatches


def shape(method: Callable[..., Any]) -> str:
    """The parameter names and kinds of ``method``, as ``async (self, a, *args, b, **kwargs)``."""
    signature = inspect.signature(method)  # an installed wrapper reports its original's (__wrapped__)
    bare = [
        parameter.replace(annotation=inspect.Parameter.empty, default=inspect.Parameter.empty)
        for parameter in signature.parameters.values()
    ]
    text = str(signature.replace(parameters=bare, return_annotation=inspect.Signature.empty))
    return f"async {text}" if inspect.iscoroutinefunction(method) else text


def patch(owner: type, name: str, wrap: Callable[[Method], Method], what: str, written_for: str) -> None:
    """Replace ``owner.name`` by ``wrap(original)``, once: a second call finds the mark and does nothing.

    ``written_for`` is the shape (see :func:`shape`) of the method the fix was written for; another
    one raises UnverifiedDependencyError naming the method, and nothing is replaced.
    """
    original: Method = getattr(owner, name)
    if getattr(original, _APPLIED, False):
        return
    found = shape(original)
    if found != written_for:
        raise UnverifiedDependencyError(
            f"the Faust workaround '{what}' cannot be applied: it wraps {owner.__module__}.{owner.__qualname__}."
            f"{name} {written_for}, and the installed one is {found}"
        )
    wrapper = functools.wraps(original)(wrap(original))
    setattr(wrapper, _APPLIED, True)
    setattr(owner, name, wrapper)
    logger.debug("faust fix applied: %s", what)
