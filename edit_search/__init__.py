"""edit-search: the smallest attribution-guided pixel edit that makes a weak classifier right."""

__version__ = "0.1.0"
