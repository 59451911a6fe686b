"""Errors of the planner's inputs."""

from oca.errors import OcaError


class InputError(OcaError):
    """A catalog, topology, manifest or trace that cannot be used; the message names the
    file, the line or JSON path, and the field. Exit status 1."""
