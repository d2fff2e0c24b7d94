"""The installed version, from the distribution's metadata (one source: pyproject.toml)."""

from importlib import metadata

try:
    __version__ = metadata.version("edge-runtime")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
