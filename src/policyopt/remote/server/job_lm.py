"""The optimizer's LM of a job on the server: an embedded model (``local``, or ``local:NAME``
when the owner grants it), or a litellm model called with exactly the credential the owner's
grant binds to it (see :mod:`policyopt.remote.server.grants`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from policyopt.remote.config import JobConfig
    from policyopt.remote.server.policy import ServerPolicy

__all__ = ["default_reflection_lm"]


class _SharedLocalLMs:
    """One embedded reflection model per local model and prompt shape, started on first use
    and shared by jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], Any] = {}

    def get(self, algorithm: str, model: str = "local") -> Any:
        """The reflection LM of ``algorithm``'s jobs on ``model`` (``local`` or ``local:NAME``)."""
        with self._lock:
            if (model, algorithm) not in self._models:
                from policyopt.lm import LocalLM
                from policyopt.registry import get_spec

                # what the algorithm needs of a tiny model (as in ``policyopt demo``)
                extra = dict(get_spec(algorithm).small_model_lm)
                self._models[model, algorithm] = LocalLM.for_reflection(model=model, **extra)
            return self._models[model, algorithm]

    def close(self) -> None:
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()


_LOCAL = _SharedLocalLMs()


def default_reflection_lm(
    config: JobConfig, *, allow_api_base: bool = False, policy: ServerPolicy | None = None
) -> Any:
    """The reflection/proposal LM a job config names: ``"local"``, ``"local:NAME"`` or a
    litellm model string.

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
    if grant.embedded:
        return _LOCAL.get(config.algorithm, models.reflection)
    from policyopt.lm import LM

    extra: dict[str, Any] = {"api_key": grant.credential()}
    if grant.api_base is not None:
        extra["api_base"] = grant.api_base
    extra.update(models.reflection_kwargs)  # transport keys only with allow_api_base
    if models.api_base:
        extra["api_base"] = models.api_base
    return LM(models.reflection, **extra)
