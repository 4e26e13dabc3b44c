"""The ``project`` fixture (a user's folder: program, data, config) for every test here."""

from tests.unit.runconfig._project import project

__all__ = ["project"]
