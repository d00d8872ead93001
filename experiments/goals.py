"""The paper's goal-conditioned half, measured at the locomotion study's budget (issue #31).

    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/goals.py [--workers 2] [--list]
        [--only TEXT] [--commit-records]

Mazes: PointMaze and AntMaze, umaze and medium, on datasets made here by `dtd data collect-maze` (1M steps
each, seed 0; AntMaze from the RL Zoo's PPO Ant steered along the planner's path, which needs
../shared/zoo). Models: DTd-b1 (the goal biases the state stream) and DTd-b2 (all streams), both with the
waypoint head; DTd-b1 without it; DT with return-to-go (the maze state carries the goal xy, so DT sees the
goal too). Scored by the success rate x 100 over 20 episodes from the env's own start and goal distribution.

IQL value goal: on hopper medium and halfcheetah medium-replay (the locomotion study's extremes), DTd and
DT-small conditioned on (max V - V(s)) / (max V - min V) of an IQL critic trained once per dataset (a step
here, its settings and losses recorded); their return-to-go counterparts are the study's own runs
(results/study/, reused).

Every train run has its model's recipe of the study (experiments/study.py: 256,000 samples, 4,000 steps x
batch 64, the model's learning rate, warm-up over 10%, DTd's head at 0.1x), evaluated every 500 steps.
Order, so that a partial grid is useful: the datasets and critics, then seed 0 of every cell, then seed 1,
then seed 2; last, PointMaze's runs trained again on this machine for their fixed start/goal scores (the
GPU box that trained them did not keep the checkpoints). Records land in results/goals/ (experiments/runner.py);
RESULTS.md: experiments/make_results.py.
The datasets are not in git: on a new machine, a maze dataset whose step has a record is rebuilt from seed 0
before the runs that need it, and checked against its record (`restore_datasets`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runner import ROOT, Job, done, main
from study import budget, recipe

SEEDS = (0, 1, 2)
DATA = Path("runs") / "goal-data"  # the maze datasets, relative to the repository (untracked, rebuilt from seed 0)
MAZE_STEPS = 1_000_000  # D4RL's size
ZOO_ANT = ROOT.parent / "shared" / "zoo" / "ppo" / "Ant-v3_1" / "Ant-v3.zip"
MAZES = tuple(f"{robot}maze-{layout}" for robot in ("point", "ant") for layout in ("umaze", "medium"))
MAZE_MODELS = {  # cell -> (preset suffix, extra arguments)
    "dtd-b1": ("dtd-b1", ()),
    "dtd-b2": ("dtd-b2", ()),
    "dtd-b1-nowp": ("dtd-b1", ("--model_opts", "waypoint_head=false")),
    "dt": ("dt", ()),
}
EPISODES = 20  # per evaluation: one target (reach the goal / the value goal's 1), 20 episodes (the study's 2 x 10)
IQL_DATASETS = {"hopper-medium": "zoo/hopper/medium-v0", "halfcheetah-medium-replay": "zoo/halfcheetah/medium-replay-v0"}
IQL_MODELS = ("dtd", "dt-small")
IQL_ARGS = ("--seed", "0")  # the critic: dtd iql train's defaults (20,000 steps, batch 256, expectile 0.7, ...)


def maze_data(maze: str) -> Path:
    return DATA / maze


def study_args(model: str, episodes: int) -> list[str]:
    """The study's budget for `model` with `episodes` per evaluation (each flag once)."""
    args = list(budget(recipe(model)))
    args[args.index("--eval_episodes") + 1] = str(episodes)
    return args


def maze_args(model: str, opts: tuple[str, ...]) -> tuple[str, ...]:
    """The study's budget for `model`, with the maze's extra model options merged into its --model_opts."""
    args = study_args(model, EPISODES)
    if opts:
        if "--model_opts" in args:
            i = args.index("--model_opts") + 1
            while i < len(args) and not args[i].startswith("--"):
                i += 1
            args[i:i] = opts[1:]
        else:
            args += opts
    return tuple(args)


def collect_command(maze: str, dest: Path) -> list[str]:
    robot, layout = maze.replace("maze-", " ").split()
    cmd = [sys.executable, "-m", "dtd", "data", "collect-maze", "--robot", robot, "--maze", layout,
           "--steps", str(MAZE_STEPS), "--seed", "0", "--out", str(dest)]
    return cmd + (["--policy", str(ZOO_ANT)] if robot == "ant" else [])


def collect(maze: str, dest: Path) -> dict:
    """Collect one maze dataset (`dtd data collect-maze`, seed 0); what it took."""
    start = time.time()
    subprocess.run(collect_command(maze, dest), check=True, cwd=ROOT, env=_one_thread(), stdout=subprocess.DEVNULL)
    seconds = time.time() - start
    return {"seconds": round(seconds, 1), "steps_per_second": round(MAZE_STEPS / seconds, 1)}


def dataset_step(maze: str):
    """Build the maze dataset if it is missing (a fixed seed: the same data on any machine with the same
    builds), then record what it holds (`dtd data info`) and what collecting it measured."""

    def step(runs: Path, out: Path) -> list[str]:
        dest = ROOT / maze_data(maze)
        cmd = collect_command(maze, dest)
        collected = None if dest.exists() else collect(maze, dest)
        info = subprocess.run([sys.executable, "-m", "dtd", "data", "info", str(dest)], check=True, cwd=ROOT,
                              capture_output=True, text=True, env=_one_thread()).stdout
        (out / "info.txt").write_text(info.replace(str(dest), str(maze_data(maze))))
        (out / "dataset.json").write_text(json.dumps({**_stats(dest), "collect": collected}, indent=1) + "\n")
        return ["dtd " + " ".join(cmd[3:]).replace(str(dest), str(maze_data(maze)))
                .replace(str(ZOO_ANT), os.path.relpath(ZOO_ANT, ROOT))]

    return step


def restore_datasets(todo: list[Job], records: Path, build=collect) -> int:
    """The datasets are not in git: on a new machine (or a fresh clone) a maze whose dataset step has a record
    but whose data is missing is rebuilt from its seed before any run that needs it starts, and must hold
    what the record says (the runs already recorded trained on that data); 2 with one line if it does not."""
    waiting = {n for j in todo if not done(j, records) for n in j.needs}
    for maze in MAZES:
        dest = ROOT / maze_data(maze)
        if f"data-{maze}" not in waiting or not done(f"data-{maze}", records) or dest.exists():
            continue
        print(f"{maze_data(maze)}: not on this machine; rebuilding it from seed 0 as its record was made", flush=True)
        build(maze, dest)
        want = json.loads((records / f"data-{maze}" / "dataset.json").read_text())
        want.pop("collect", None)
        got = _stats(dest)
        if got != want:  # set aside, so that a second start does not take it for the recorded data
            aside = dest.with_name(dest.name + ".differs")
            shutil.rmtree(aside, ignore_errors=True)
            dest.rename(aside)
            print(f"goals.py: error: {maze_data(maze)} rebuilt here differs from the recorded one (episodes "
                  f"{got['episodes']} vs {want['episodes']}, ends {got['ends']} vs {want['ends']}; kept as "
                  f"{aside.name}); its runs would train on other data: bring the original data over, or remove "
                  f"{records.name}/data-{maze} and the maze's records to start the maze again", file=sys.stderr)
            return 2
    return 0


def _stats(path: Path) -> dict:
    """Episodes, length and how episodes end (at the goal, in a flip, at the time limit), as dtd loads them."""
    import numpy as np

    from dtd.data.loaders import load_dataset

    ds = load_dataset(str(path))
    ends = {"goal": 0, "flip": 0, "time": 0}
    for ep in ds.episodes:
        flipped = "flipped" in ep.infos and bool(ep.infos["flipped"].any())
        ends["goal" if ep.terminals.any() else "flip" if flipped else "time"] += 1
    return {"episodes": ds.num_episodes, "transitions": ds.num_steps, "mean_length": float(np.mean(ds.lengths())),
            "episodes_with_reward": int(sum(ep.rewards.sum() > 0 for ep in ds.episodes)), "ends": ends}


def _one_thread() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def critic_name(dataset: str) -> str:
    return f"iql-{dataset}"


def _critic_finished(run: Path) -> bool:
    """A critic run whose metrics reach its configured last step (a killed one keeps an earlier checkpoint)."""
    import yaml

    if not (run / "checkpoints" / "last.pt").is_file() or not (run / "metrics.jsonl").is_file():
        return False
    steps = int(yaml.safe_load((run / "config.yaml").read_text())["steps"])
    lines = [json.loads(t) for t in (run / "metrics.jsonl").read_text().splitlines() if t.strip()]
    return bool(lines) and lines[-1].get("step") == steps


def critic_step(dataset: str):
    """Train the IQL critic of a dataset (`dtd iql train`), then keep its config and losses."""

    def step(runs: Path, out: Path) -> list[str]:
        name = critic_name(dataset)
        run = runs / name
        cmd = [sys.executable, "-m", "dtd", "iql", "train", IQL_DATASETS[dataset], *IQL_ARGS,
               "--out-dir", str(runs), "--run-name", name, "--force"]
        if not _critic_finished(run):  # a killed critic restarts (--force): dtd iql train does not resume
            subprocess.run(cmd, check=True, cwd=ROOT, env=_one_thread(), stdout=subprocess.DEVNULL)
            if not _critic_finished(run):
                raise RuntimeError(f"{run}: the critic's metrics do not reach its last step")
        for f in ("config.yaml", "metrics.jsonl"):
            shutil.copyfile(run / f, out / f)
        return ["dtd " + " ".join(cmd[3:]).replace(str(runs), f"runs/{runs.name}")]

    return step


def tokens_name(dataset: str) -> str:
    return f"goal-tokens-{dataset}"


def value_goal_stats(critic, dataset) -> dict:
    """What the value goal says about the data: its spread, an episode's first token, and how an episode's
    tokens follow its return (the goal is a function of the state, so it can only describe the episode)."""
    import numpy as np

    tokens = [critic.goal_tokens(ep.observations) for ep in dataset.episodes]
    returns = np.array([float(ep.rewards.sum()) for ep in dataset.episodes])
    first, mean = np.array([t[0] for t in tokens]), np.array([t.mean() for t in tokens])
    pct = lambda x, qs: {str(q): round(float(np.percentile(x, q)), 4) for q in qs}  # noqa: E731
    low, high = np.quantile(returns, [0.25, 0.75])
    quartile = lambda m: {"episodes": int(m.sum()), "return": round(float(returns[m].mean()), 1),  # noqa: E731
                          "mean_token": round(float(mean[m].mean()), 4)}
    return {"episodes": len(tokens), "v_small": round(critic.small, 3), "v_large": round(critic.large, 3),
            "token_percentiles": pct(np.concatenate(tokens), (1, 10, 50, 90, 99)),
            "first_token_percentiles": pct(first, (10, 50, 90)), "eval_first_token": 1.0,
            "corr_mean_token_return": _corr(mean, returns), "corr_first_token_return": _corr(first, returns),
            "bottom_quartile": quartile(returns <= low), "top_quartile": quartile(returns >= high)}


def _corr(x, y) -> float | None:
    """Pearson's r, None where either side is constant (r is undefined there)."""
    import numpy as np

    return None if np.std(x) == 0 or np.std(y) == 0 else round(float(np.corrcoef(x, y)[0, 1]), 3)


def tokens_step(dataset: str):
    """The value goal's tokens over its dataset, from the dataset's critic (`value_goal_stats`)."""

    def step(runs: Path, out: Path) -> list[str]:
        import torch

        from dtd.data.loaders import load_dataset
        from dtd.runs import load_critic

        torch.set_num_threads(1)
        stats = value_goal_stats(load_critic(runs / critic_name(dataset)), load_dataset(IQL_DATASETS[dataset]))
        (out / "tokens.json").write_text(json.dumps({"dataset": IQL_DATASETS[dataset], **stats}, indent=1) + "\n")
        return [f"experiments/goals.py --only {tokens_name(dataset)} (goals.value_goal_stats of runs/{runs.name}/"
                f"{critic_name(dataset)} over {IQL_DATASETS[dataset]})"]

    return step


FIXED_MAZES = MAZES
# PointMaze's grid trained on a GPU box whose checkpoints were not kept: each of its runs is trained again here (the
# same arguments and seed; group maze-rerun) for its final checkpoint's fixed start/goal score. The reruns' own
# scores also say how far a run reproduces on another machine.
RERUN_MAZES = tuple(m for m in MAZES if m.startswith("point"))
RERUN = "-rerun"


def fixed_name(run: str) -> str:
    return f"{run}-fixed"


def fixed_step(run: str):
    """The final checkpoint of a maze run at the D4RL-style fixed start and goal (`dtd eval RUN --fixed-goal`):
    20 episodes, the run's other settings; needs the checkpoint on this machine."""

    def step(runs: Path, out: Path) -> list[str]:
        import torch

        from dtd.envs import fixed_goal_id
        from dtd.evaluation import evaluate_run
        from dtd.runs import load_run

        torch.set_num_threads(1)
        ckpt = runs / run / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: not on this machine; remove the run's record to retrain it")
        model, info = load_run(ckpt)
        result = evaluate_run(model, info, "cpu", env_id=fixed_goal_id(info.env_id), episodes=EPISODES, progress=False)
        result.update(checkpoint="last", step=info.step)
        (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        return [f"dtd eval runs/{runs.name}/{run} --fixed-goal --episodes {EPISODES} --device cpu"]

    return step


def maze_jobs(maze: str, seed: int, group: str = "maze", suffix: str = "") -> list[Job]:
    """A maze's train runs of one seed, each followed (right after it, while its checkpoint is here) by its
    fixed start/goal step where the maze has one."""
    out = []
    for cell, (preset, opts) in MAZE_MODELS.items():
        model = "dt-small" if cell == "dt" else "dtd"
        args = ("--config", f"maze/{maze}-{preset}", "--dataset", str(maze_data(maze)), *maze_args(model, opts),
                "--seed", str(seed))
        tags = {"group": group, "dataset": maze, "model": cell, "seed": str(seed)}
        name = f"{maze}-{cell}-s{seed}{suffix}"
        out.append(Job(name, args, tags, needs=(f"data-{maze}",)))
        if maze in FIXED_MAZES and (maze not in RERUN_MAZES or suffix == RERUN):
            out.append(Job(fixed_name(name), (), {**tags, "group": "maze-fixed"}, step=fixed_step(name), needs=(name,)))
    return out


def jobs() -> list[Job]:
    """Every job once, in run order (the docstring says why); PointMaze's reruns last."""
    steps = [Job(f"data-{m}", (), {"group": "data", "dataset": m}, step=dataset_step(m)) for m in MAZES]
    steps += [Job(critic_name(d), (), {"group": "critic", "dataset": d}, step=critic_step(d)) for d in IQL_DATASETS]
    steps += [Job(tokens_name(d), (), {"group": "tokens", "dataset": d}, step=tokens_step(d), needs=(critic_name(d),))
              for d in IQL_DATASETS]
    runs = []
    for seed in SEEDS:
        for maze in MAZES:
            runs += maze_jobs(maze, seed)
        for dataset in IQL_DATASETS:
            for model in IQL_MODELS:
                args = ("--config", f"iql/{dataset}-{'dt' if model == 'dt-small' else model}",
                        "--critic", f"runs/goals/{critic_name(dataset)}", *study_args(model, EPISODES),
                        "--seed", str(seed))
                tags = {"group": "iql", "dataset": dataset, "model": model, "seed": str(seed)}
                runs.append(Job(f"{dataset}-{model}-iql-s{seed}", args, tags, needs=(critic_name(dataset),)))
    reruns = [j for seed in SEEDS for maze in RERUN_MAZES for j in maze_jobs(maze, seed, "maze-rerun", RERUN)]
    return [*steps, *runs, *reruns]


if __name__ == "__main__":
    sys.exit(main(__doc__, jobs(), "goals", prepare=restore_datasets))
