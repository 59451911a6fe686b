"""Errors of the planner: its inputs, and its workers."""

from oca.errors import OcaError


class InputError(OcaError):
    """A catalog, topology, manifest or trace that cannot be used; the message names the
    file, the line or JSON path, and the field. Exit status 1."""


class WorkerError(OcaError):
    """A worker process of the plan died (killed: out of memory, a signal); the plan is
    not written. Exit status 1."""
