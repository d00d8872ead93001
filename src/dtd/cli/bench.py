"""`dtd bench`: measure training and evaluation throughput here and write the figures as JSON."""

from __future__ import annotations

import argparse


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    from dtd.bench.train import GPU_VARIANTS  # no torch import: cheap at start-up

    p = sub.add_parser("bench", help="measure training/evaluation speed on this machine (JSON)",
                       description="Training samples/s per preset and batch size, sampler cost, inference latency, "
                                   "evaluation env steps/s for N episodes together (a curve over N), peak memory and a profile; the naive "
                                   "reference paths are timed in the same process, so speed-ups are measured ratios.")
    p.add_argument("--out", default="bench.json", help="JSON file to write (default: bench.json)")
    p.add_argument("--presets", type=_csv(str), default=None, help="model presets, comma-separated (default dtd,dt-small)")
    p.add_argument("--batch-sizes", type=_csv(int), default=None, help="comma-separated (default 64,256)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per setting (default 10)")
    p.add_argument("--eval-episodes", type=_csv(int), default=None, metavar="N,N,...",
                   help="the evaluation curve: env steps/s with N episodes together, for each N (default 1,10,20,50,100)")
    p.add_argument("--reference-episodes", type=int, default=None, metavar="R",
                   help="episodes run one at a time; every N's first min(N, R) returns must equal theirs (default 10)")
    p.add_argument("--eval-max-steps", type=int, default=None, help="cap on each evaluation episode (default 200)")
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="evaluate this trained run's model (full-length episodes) instead of an untrained one")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--ddp", type=int, default=None, metavar="N",
                   help="also time data-parallel training: N processes of 1 thread, the batch split between them")
    p.add_argument("--eval-workers", type=int, default=None, metavar="W",
                   help="also time each N of the curve split over W forked processes (default 2; 1: skip)")
    p.add_argument("--device", default="cpu",
                   help="cpu | auto | cuda | cuda:N: where the models run (default cpu; the evaluation-workers row is CPU-only)")
    p.add_argument("--variants", type=_csv(str), default=None,
                   help="extra training variants, comma-separated, parts joined by '+': bf16, compile, cudagraphs "
                        "(e.g. bf16,compile+bf16); default none on CPU, on a GPU: " + ",".join(GPU_VARIANTS))
    p.add_argument("--no-naive", action="store_true",
                   help="skip the reference paths (no speed-up ratios, no returns-identical checks)")
    p.add_argument("--tiny", action="store_true", help="tiny models and settings: a smoke test, not a measurement")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtd.bench import GPU_VARIANTS, BenchConfig, run_bench, summary, write_json
    from dtd.device import resolve_device
    from dtd.paths import check_output_file

    given = {"presets": args.presets, "batch_sizes": args.batch_sizes, "steps": args.steps,
             "eval_episodes": args.eval_episodes, "reference_episodes": args.reference_episodes,
             "eval_max_steps": args.eval_max_steps, "threads": args.threads,
             "run": args.run, "ddp": args.ddp, "eval_workers": args.eval_workers}
    from dtd.errors import DtdError
    from dtd.runs import is_checkpoint_file

    out = check_output_file(args.out, "bench --out")
    if is_checkpoint_file(out):
        raise DtdError(f"bench --out {out}: is a dtd checkpoint (a run's weights); choose another file")
    device = resolve_device(args.device)
    variants = args.variants if args.variants is not None else (GPU_VARIANTS if device != "cpu" else None)
    given.update(device=device, variants=variants)
    given = {k: v for k, v in given.items() if v is not None}
    if args.no_naive:
        given["naive"] = False
    cfg = BenchConfig.tiny_config(**given) if args.tiny else BenchConfig(**given)
    result = run_bench(cfg, progress=not args.no_progress)
    print(summary(result))
    print(f"wrote {write_json(result, out)}")
    return 0
