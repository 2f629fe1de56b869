"""qnprov: the Quang Ninh official mail system, as code."""

__version__ = "0.1.0"
