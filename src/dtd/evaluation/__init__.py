"""Evaluation in the simulator (N episodes together, one batched model call per step) and run reports.

``evaluate(model, env_id, targets, ...)`` is the engine; ``evaluate_run(model, ckpt)`` applies a run's
recorded settings; ``evaluate_reference`` is the naive one-episode-at-a-time path (same returns).
Goal signals are ``GoalFn`` objects (``ReturnToGo`` here, value and maze goals in ``goals``).
"""

from dtd.evaluation.settings import TARGET_RETURNS, target_returns
from dtd.evaluation.rollout import evaluate, evaluate_reference, evaluate_run, format_table

__all__ = ["TARGET_RETURNS", "GoalFn", "ReturnToGo", "make_env", "make_vector_env", "target_returns",
           "evaluate", "evaluate_reference", "evaluate_run", "format_table"]
