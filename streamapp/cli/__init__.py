"""The ``streamapp`` command line: ``main`` is the entry point, ``common`` the helpers every command uses."""
