"""The remote backend's own error: a job asks for what the server's policy refuses.

Raised by the server's policy checks and by the task apps' outbound policy at submit, so it
lives below both.
"""

from __future__ import annotations

from policyopt.errors import ConfigError

__all__ = ["PolicyViolation"]


class PolicyViolation(ConfigError):
    """A job asks for something the server's policy does not allow; ``path`` names it."""

    def __init__(self, path: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.status = status
