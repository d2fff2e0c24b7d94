"""Every error edge_runtime raises on purpose.

    EdgeRuntimeError
     ├── ConfigError             a device config or option is wrong (file, key, reason)
     ├── InvalidInput            a row cannot be a valid input (names the feature)
     ├── ModelLoadError          an artifact cannot be loaded or fails its smoke test
     │    └── ArtifactIntegrityError   the file does not match its manifest (hash, size)
     ├── BackendError            the backend failed while running a valid input
     ├── TrustError              a signature, key or signed document is missing, invalid or untrusted
     ├── ConversionError         a conversion failed or broke its parity gate
     └── UnsupportedModel        no converter exists for this flavor / estimator / format

Each builds its message from its attributes and ends, where it can, with what to do.
Third-party exceptions are translated where they are caught (``raise X(...) from exc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EdgeRuntimeError(Exception):
    """Base of every error raised on purpose by edge_runtime and the converters."""


class ConfigError(EdgeRuntimeError):
    """A configuration file or option is invalid."""

    def __init__(self, reason: str, *, file: str | Path | None = None, key: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        self.reason = reason
        where = ", ".join(p for p in (self.file, f"key {key!r}" if key else None) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


NAME_CHARS = 64  # of a caller's key or feature name echoed in an error


def echo(text: str, limit: int = NAME_CHARS) -> str:
    """A caller's string as it may appear in an error: valid UTF-8 (a lone surrogate becomes
    ``\\udcxx``) and at most ``limit`` characters, saying how long it was."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else f"{safe[:limit]}... ({len(text)} characters)"


class InvalidInput(EdgeRuntimeError, ValueError):
    """An input row cannot be valid for this model; it never reaches the backend."""

    def __init__(self, reason: str, *, feature: str | None = None, row: int | None = None) -> None:
        feature = echo(str(feature)) if feature is not None else None
        self.feature = feature
        self.row = row
        self.reason = reason
        where = []
        if row is not None:
            where.append(f"row {row}")
        if feature is not None:
            where.append(f"feature {feature!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class ModelLoadError(EdgeRuntimeError):
    """An artifact could not be loaded, or loaded but failed its smoke test."""

    def __init__(self, path: str | Path, reason: str, *, hint: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.hint = hint
        msg = f"cannot load model from {self.path}: {reason}"
        super().__init__(f"{msg}. {hint}" if hint else msg)


class ArtifactIntegrityError(ModelLoadError):
    """The model file does not match what its manifest promises."""

    def __init__(self, path: str | Path, what: str, expected: Any, actual: Any) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            path,
            f"{what} mismatch (manifest says {expected}, file has {actual})",
            hint="The artifact was modified or truncated after conversion; copy it again "
            "or re-run edge-convert.",
        )


class BackendError(EdgeRuntimeError):
    """The inference backend failed on an input that passed validation."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} backend failed: {reason}")


class TrustError(EdgeRuntimeError):
    """A signature, key or signed document is missing, invalid or not trusted."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConversionError(EdgeRuntimeError):
    """A conversion failed, or its artifact broke the parity gate."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(f"{reason}. {hint}" if hint else reason)


class UnsupportedModel(ConversionError):
    """No converter exists for this flavor, estimator or target format."""

    def __init__(self, what: str, *, supported: list[str] | None = None, hint: str | None = None) -> None:
        self.what = what
        self.supported = sorted(supported) if supported else []
        parts = [f"unsupported: {what}"]
        if self.supported:
            parts.append("supported: " + ", ".join(self.supported))
        super().__init__("; ".join(parts), hint=hint)


# exit codes of both commands (edge-runtime, edge-convert), documented in the README
EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_CONVERSION = 1, 2, 3, 4


def exit_code(exc: EdgeRuntimeError) -> int:
    """The process exit code for an error a command ends with."""
    if isinstance(exc, (InvalidInput, ConfigError)):
        return EXIT_USAGE
    if isinstance(exc, (ModelLoadError, TrustError)):
        return EXIT_MODEL
    if isinstance(exc, ConversionError):
        return EXIT_CONVERSION
    return EXIT_ERROR
