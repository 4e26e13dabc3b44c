"""Experiment tracking: event listeners that log optimizer runs to a tracking store.

:mod:`policyopt.tracking.mlflow` (``pip install 'policyopt[mlflow]'``) logs settings, scores
against rollouts, LM spend, the best prompt, the result and the plots to MLflow. Like the
progress display and the JSONL log, a tracker only listens to events; optimizers never know it.
Layer: beside ``bench`` (it reads :mod:`policyopt.runview`); nothing below imports it.
"""

from policyopt.tracking.mlflow import MLflowRun, log_run_dir, mlflow_listener

__all__ = ["MLflowRun", "log_run_dir", "mlflow_listener"]
