"""The module-level Faust ``app`` (and its :class:`~streamapp.runtime.Runtime`) that agents attach to.

This module never imports ``agents``: Faust's autodiscovery imports them when a
worker starts, so the import graph stays ``agents -> streamapp -> schemas``.
Importing it builds the app from the environment's settings.
"""

from __future__ import annotations

from streamapp.runtime import build_runtime
from streamapp.settings import get_settings

runtime = build_runtime(get_settings())
app = runtime.app
