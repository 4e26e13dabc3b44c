"""Bayesian search over (instruction, demo set) per component with Optuna's TPE, ask/tell.

Trials are asked in batches and told after their rollouts finish, batch-synchronously, so the
sequence of suggestions depends only on the seed and the scores (not on thread timing): a
resumed run that replays the same scores gets the same suggestions. ``constant_liar`` keeps the
trials of one batch apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Search"]


class Search:
    """An Optuna study over categorical choices; parameters are ``"<component>:<kind>"``."""

    def __init__(
        self,
        space: dict[str, int],
        *,
        seed: int,
        n_startup_trials: int,
        storage_path: Path | None,
        sampler: Any = None,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.distributions: dict[str, optuna.distributions.BaseDistribution] = {
            name: optuna.distributions.CategoricalDistribution(list(range(size)))
            for name, size in space.items()
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if sampler is None:
                sampler = optuna.samplers.TPESampler(
                    seed=seed,
                    multivariate=True,
                    constant_liar=True,
                    n_startup_trials=n_startup_trials,
                )
            storage: Any = None
            if storage_path is not None:
                # the run journal is the source of truth: a resumed run replays into a new study
                storage_path.unlink(missing_ok=True)
                # a process killed mid-write leaves Optuna's lock behind (30 s wait, then a
                # warning): this run is the only writer of its run_dir, so a lock is stale
                storage_path.with_name(storage_path.name + ".lock").unlink(missing_ok=True)
                from optuna.storages.journal import JournalFileBackend

                storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage_path)))
            self.study = optuna.create_study(
                direction="maximize", sampler=sampler, storage=storage, study_name="mipro"
            )

    def add(self, params: dict[str, int], value: float) -> None:
        """Record a configuration scored outside the search (the seed program)."""
        trial = self.optuna.trial.create_trial(
            params=params, distributions=self.distributions, value=value
        )
        self.study.add_trial(trial)

    def ask(self, k: int) -> list[Any]:
        """``k`` new trials with their parameters suggested."""
        trials = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
            for _ in range(k):
                trial = self.study.ask(self.distributions)
                trials.append(trial)
        return trials

    def fail(self, trials: Sequence[Any]) -> None:
        """Close trials that were asked but will not be run."""
        for trial in trials:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)

    def tell(self, trials: Sequence[Any], values: Sequence[float]) -> None:
        """Report the trials' scores, in order."""
        for trial, value in zip(trials, values, strict=True):
            self.study.tell(trial, value)
