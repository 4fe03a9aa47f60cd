"""Command groups of the ``relayburnd`` CLI that live outside ``cli.py``.

Each module defines one click group; ``cli.py`` registers it, so a group can be
imported and tested on its own.
"""
