"""Exact, fast online presence for Django users over Django Channels.

Importing this package has no side effects: settings are read, backends built and
connections opened only when first used.
"""

__version__ = "0.1.0.dev0"
