"""`dtd data info|collect`: inspect a dataset, or make one by rolling out a behaviour policy."""

from __future__ import annotations

import argparse

from dtd.cli import finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and collect offline datasets")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=_no_subcommand)

    info = sub.add_parser("info", help="episodes, transitions and returns of a dataset")
    info.add_argument("source", nargs="?", default=None,
                      help="Minari id, Minari folder, D4RL .hdf5, DT .pkl or A+B (default: the embedded dataset)")
    info.add_argument("--download", action="store_true", help="let Minari download an id that is not local")
    info.add_argument("--env", default=None, help="also check the dataset fits this Gymnasium env's spaces")
    info.set_defaults(func=cmd_info)

    col = sub.add_parser("collect", help="roll out a policy and write a Minari dataset")
    col.add_argument("--env", required=True, help="Gymnasium id, e.g. Hopper-v5")
    col.add_argument("--policy", required=True, help="Stable-Baselines3 .zip file, or 'random'")
    col.add_argument("--steps", type=int, required=True, help="transition budget (the last episode is cut)")
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--out", default=None, help="dataset folder to create")
    col.add_argument("--dataset-id", default=None,
                     help="Minari id stored in the metadata; without --out the dataset goes to "
                          "<MINARI_DATASETS_PATH>/<id> (default dtd/<env>/collected-v0)")
    col.add_argument("--deterministic", action="store_true", help="policy mean actions (default: sampled)")
    col.add_argument("--noise", type=finite_float, default=0.0, help="Gaussian action noise sigma (clipped to bounds)")
    col.add_argument("--algo", default=None, help="SB3 algorithm (default: detected from the file)")
    col.add_argument("--vecnormalize", default=None,
                     help="VecNormalize .pkl (default: <policy without .zip>/vecnormalize.pkl if present)")
    col.add_argument("--ref-min", type=finite_float, default=None, help="random-policy return (default: D4RL's)")
    col.add_argument("--ref-max", type=finite_float, default=None, help="expert return (default: D4RL's)")
    col.add_argument("--no-compress", action="store_true", help="keep Minari's uncompressed hdf5")
    col.add_argument("--description", default=None)
    col.set_defaults(func=cmd_collect)

    maze = sub.add_parser("collect-maze", help="PointMaze / AntMaze dataset along a grid planner's waypoints (D4RL recipe)",
                          description="BFS waypoints over the maze grid towards the goal, Gaussian action noise, per-step "
                          "goal in infos/goal. Point: a PD controller, the goal resampled when reached (D4RL maze2d). "
                          "Ant: the RL Zoo's PPO Ant steered by rotating and mirroring the world it sees; an episode "
                          "ends at the goal, at a flip (marked infos/flipped) or at the time limit.")
    maze.add_argument("--maze", required=True, choices=["umaze", "medium", "large"], help="maze layout")
    maze.add_argument("--robot", default="point", choices=["point", "ant"], help="PointMaze (default) or AntMaze")
    maze.add_argument("--policy", default=None,
                      help="--robot ant: the zoo's PPO Ant, e.g. ppo/Ant-v3_1/Ant-v3.zip (its vecnormalize.pkl beside)")
    maze.add_argument("--steps", type=int, required=True, help="transition budget (the last episode is cut)")
    maze.add_argument("--seed", type=int, default=0)
    maze.add_argument("--noise", type=finite_float, default=None,
                      help="Gaussian action noise sigma (default 0.1 point, 0.2 ant: D4RL's)")
    maze.add_argument("--out", default=None, help="dataset folder to create")
    maze.add_argument("--dataset-id", default=None,
                      help="without --out the dataset goes to <MINARI_DATASETS_PATH>/<id> "
                           "(default dtd/<robot>maze-<maze>/planner-v0)")
    maze.set_defaults(func=cmd_collect_maze)


def cmd_info(args: argparse.Namespace) -> int:
    from dtd.data.loaders import EMBEDDED_DATASET, load_dataset
    from dtd.envs import check_env_compat

    ds = load_dataset(args.source or EMBEDDED_DATASET, download=args.download)
    if args.env:
        check_env_compat(ds, args.env)
    for line in describe(ds):
        print(line)
    return 0


def describe(ds) -> list[str]:
    """The lines `dtd data info` prints."""
    import numpy as np

    returns, lengths = ds.returns(), ds.lengths()
    lines = [
        f"dataset:      {ds.name}",
        f"env:          {ds.env_id or 'unknown'}",
        f"episodes:     {ds.num_episodes}",
        f"transitions:  {ds.num_steps}",
        f"dims:         obs {ds.obs_dim}, action {ds.act_dim}" + (f", goal {ds.goal_dim}" if ds.goal_dim else ""),
        f"length:       mean {lengths.mean():.1f}, min {lengths.min()}, max {lengths.max()}",
        f"return:       mean {returns.mean():.1f}, min {returns.min():.1f}, max {returns.max():.1f}",
    ]
    if getattr(ds, "maze_layout", False):  # maze data: sparse reward 1 at the goal
        if any(ep.terminals.any() for ep in ds.episodes):  # an episode ends at its goal
            success = np.mean([bool(ep.terminals.any()) for ep in ds.episodes])
            flips = [bool(ep.infos["flipped"].any()) for ep in ds.episodes if "flipped" in ep.infos]
            lines.append(f"success:      {100 * success:.1f}% of episodes reach their goal"
                         + (f"; {100 * np.mean(flips):.1f}% end in a flip" if flips else ""))
        else:  # a continuing task: a new goal whenever one is reached (reward 1 at each)
            lines.append(f"goals:        {returns.mean():.1f} reached per episode (a new goal each time)")
    ref = ds.reference_scores()
    if ref is None:
        lines.append("normalized:   n/a (no reference scores for this env)")
    else:
        norm = ds.normalized_score(returns)
        lines.append(f"normalized:   mean {norm.mean():.1f}, min {norm.min():.1f}, max {norm.max():.1f} "
                     f"(ref min {ref[0]:g}, max {ref[1]:g})")
    return lines


def cmd_collect(args: argparse.Namespace) -> int:
    from dtd.data.collect import collect

    dest = collect(args.env, args.policy, args.steps, seed=args.seed, out=args.out,
                   dataset_id=args.dataset_id, deterministic=args.deterministic, noise=args.noise,
                   ref_min=args.ref_min, ref_max=args.ref_max, algo=args.algo,
                   vecnormalize=args.vecnormalize, compress=not args.no_compress,
                   description=args.description)
    return _wrote(dest)


def cmd_collect_maze(args: argparse.Namespace) -> int:
    from dtd.data.maze import collect_maze

    dest = collect_maze(args.maze, args.steps, seed=args.seed, noise=args.noise, out=args.out,
                        dataset_id=args.dataset_id, robot=args.robot, policy=args.policy)
    return _wrote(dest)


def _wrote(dest) -> int:
    """After a collector: where the dataset went and what it holds."""
    from dtd.data.loaders import load_dataset

    print(f"wrote {dest}")
    for line in describe(load_dataset(str(dest))):
        print(line)
    return 0


def _no_subcommand(args: argparse.Namespace) -> int:
    from dtd.errors import DtdError

    raise DtdError("data: choose a subcommand: info, collect, collect-maze (see `dtd data --help`)")
