"""Evaluation in the simulator (N episodes together, one batched model call per step) and run reports.

``evaluate(model, EvalSettings(...))`` is the engine's entry; ``evaluate_run(model, info)`` applies a
run's recorded settings; ``evaluate_reference`` is the naive one-episode-at-a-time path (same returns).
Modules: settings (what to run), rollout (the engine), workers (fork pool), results (the schema),
evaluator (evaluate*), report (`dtd report`).
"""

from dtd.evaluation.evaluator import evaluate, evaluate_reference, evaluate_run
from dtd.evaluation.settings import TARGET_RETURNS, EvalSettings, run_goal, run_settings, target_returns

__all__ = ["TARGET_RETURNS", "EvalSettings", "evaluate", "evaluate_reference", "evaluate_run", "run_goal",
           "run_settings", "target_returns"]
