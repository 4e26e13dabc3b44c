"""Run configs: one TOML schema for local runs (``policyopt optimize``) and remote jobs.

:mod:`~policyopt.runconfig.schema` holds what both sides share; :mod:`.local` adds a local run's
program, data, models and run directory; :mod:`.estimate` says what a run will cost before it
starts. The job server's :class:`policyopt.remote.config.JobConfig` builds on the same schema.
"""

from policyopt.runconfig.schema import (
    SECTION_NAMES,
    Budget,
    Models,
    RunConfigBase,
    parse_override,
    read_toml,
)

__all__ = [
    "SECTION_NAMES",
    "Budget",
    "Models",
    "RunConfigBase",
    "parse_override",
    "read_toml",
]
