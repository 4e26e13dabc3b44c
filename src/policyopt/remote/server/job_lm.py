"""The optimizer's LM of a job on the server: the embedded model, or a litellm model called
with exactly the credential the owner's grant binds to it (see
:mod:`policyopt.remote.server.grants`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.config import JobConfig
    from policyopt.remote.server.policy import ServerPolicy

__all__ = ["default_reflection_lm"]


class _SharedLocalLMs:
    """One embedded reflection model per prompt shape, started on first use and shared by jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}

    def get(self, algorithm: str) -> Any:
        with self._lock:
            if algorithm not in self._models:
                from policyopt.lm import LocalLM
                from policyopt.registry import get_spec

                # what the algorithm needs of a tiny model (as in ``policyopt demo``)
                extra = dict(get_spec(algorithm).small_model_lm)
                self._models[algorithm] = LocalLM.for_reflection(**extra)
            return self._models[algorithm]

    def close(self) -> None:
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()


_LOCAL = _SharedLocalLMs()


def default_reflection_lm(
    config: JobConfig, *, allow_api_base: bool = False, policy: ServerPolicy | None = None
) -> Any:
    """The reflection/proposal LM a job config names: ``"local"`` or a litellm model string.

    The server's policy is checked again here (a config stored under an older, looser policy
    is refused too): the model must fall under one of the owner's grants, and a job may set
    only sampling settings unless the owner allows more, otherwise a request could make the
    server send its provider keys to any host. The LM is always given its key explicitly:
    the grant's bound credential (or a placeholder that is no secret), never litellm's look-up
    of provider keys in the environment.
    """
    from policyopt.remote.server.policy import ServerPolicy

    policy = policy or ServerPolicy(allow_api_base=allow_api_base)
    models = config.models
    policy.check_models(models)
    grant = policy.grant_for(models.reflection)
    if models.reflection == "local" and grant.api_base is None:
        return _LOCAL.get(config.algorithm)
    from policyopt.lm import LM

    extra: dict[str, Any] = {"api_key": grant.credential()}
    if grant.api_base is not None:
        extra["api_base"] = grant.api_base
    extra.update(models.reflection_kwargs)  # transport keys only with allow_api_base
    if models.api_base:
        extra["api_base"] = models.api_base
    return LM(models.reflection, **extra)
