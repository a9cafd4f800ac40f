"""Errors sdlab raises on purpose.

Every message is one line that says what was wrong and what is valid. The CLI
prints ``error: <message>`` and exits 2 on any :class:`SdlabError`; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations


class SdlabError(Exception):
    """Base class: a problem the user can fix from the message alone."""


class ValidationError(SdlabError, ValueError):
    """A parameter value is out of range or malformed (the message names it)."""


class ModelNotFoundError(SdlabError):
    """A model name, directory or file could not be resolved or is not available offline."""


class UnsafeCheckpointError(SdlabError):
    """A pickle checkpoint was refused because loading it can run arbitrary code."""


class MetadataError(SdlabError):
    """Image metadata (A1111 ``parameters``, ComfyUI ``prompt``) is missing or malformed."""


class DependencyError(SdlabError):
    """An optional package needed for this feature is not installed."""


class StoreError(SdlabError):
    """A result store on disk is corrupt or was made with other arguments."""


class CodecError(SdlabError):
    """A compressed byte string is corrupt, truncated or made for another model."""


class DataError(SdlabError):
    """A dataset could not be read or lacks what an analysis needs."""


class Cancelled(SdlabError):
    """Long work was stopped by the user (a widget's Cancel button or a callback)."""
