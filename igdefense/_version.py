"""The package version, below every other module (so any module can import it)."""

__version__ = "0.2.0"
