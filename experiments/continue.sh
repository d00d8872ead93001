#!/usr/bin/env bash
# Continue the experiments where the committed records leave them: the rest of the diagnosis grid
# (experiments/diagnose.py), the goal-conditioned grid (experiments/goals.py: maze datasets, IQL critics, maze and
# IQL-goal runs), then the locomotion study (experiments/study.py), two one-thread runs at a time. Each finished
# run's record is committed as it lands, so work can stop at any moment and resume later, here or after a fresh
# clone (runs whose checkpoints are still on this machine resume from them; a maze dataset missing here is rebuilt
# from its seed and checked against its record before the runs that need it).
#
#   setsid nohup bash experiments/continue.sh > runs/experiments.log 2>&1 &    # in the background
#   kill -- -PGID                                                             # stop (every run with it)
set -uo pipefail
cd "$(dirname "$0")/.."
export MINARI_DATASETS_PATH="${MINARI_DATASETS_PATH:-../shared/datasets}"
py=.venv/bin/python
$py experiments/diagnose.py --workers 2 --commit-records \
    || echo "continue.sh: some diagnosis runs failed (above); the goal grid starts anyway"
$py experiments/goals.py --workers 2 --commit-records \
    || echo "continue.sh: some goal-grid jobs failed (above); the study starts anyway"
exec $py experiments/study.py --workers 2 --commit-records
