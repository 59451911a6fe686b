"""Errors an operator can act on.

Every error carries the process exit code the CLI uses for it: 1 for an
operational error (the store, a disk, a file), 2 for a usage error (a bad
argument that no state of the machine would make valid).
"""


class OcaError(Exception):
    """An operational error: something on the machine is not as needed."""

    exit_code = 1


class UsageError(OcaError):
    """The request itself is malformed (bad id, unknown tier, bad option value)."""

    exit_code = 2


class ConfigError(OcaError):
    """The configuration file is unreadable or invalid; the message names file and key."""


class StoreError(OcaError):
    """The store refused an operation; the store is unchanged."""


class UnknownObjectError(StoreError):
    """No object with this id is indexed."""


class ObjectExistsError(StoreError):
    """An object with this id is already stored."""


class TierFullError(StoreError):
    """No healthy disk of the tier has room for the object."""


class DigestMismatchError(StoreError):
    """Bytes read do not hash to the digest they were expected to have."""
