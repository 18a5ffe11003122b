"""The module-level Faust ``app`` that the agents attach to.

This module never imports ``agents``: Faust's autodiscovery imports them when a
worker starts, so the import graph stays ``agents -> streamapp -> schemas``.
Importing it builds the app from the environment's settings.
"""

from __future__ import annotations

from streamapp.factory import create_app
from streamapp.settings import get_settings

app = create_app(get_settings())
