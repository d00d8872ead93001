"""Why does DTd start slower than DT? The grid behind RESULTS.md "Diagnosis" (issue: Faithful DTd).

    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/diagnose.py [--workers 2] [--list]

Every run: hopper or halfcheetah medium-replay, 1,000 steps x batch 64 (or 250 x 256: the same samples),
AdamW (wd 1e-4) with a linear warm-up over the first 10% of the steps then the spec's decay, clip 0.25,
dropout 0.1, K 20; evaluated at steps 500 and 1,000 with 10 episodes at each of the spec's two targets;
the shuffled-input probe (dtd.training.probe) at steps 200, 400 and 1,000. Seeds 0 and 1.

One factor at a time around a centre (lr 3e-4, batch 64; DTd: the faithful default, c22, bias all,
head init 1x). Tier 1 (the learning rate of every model) runs first, then tier 2a (the other factors a
recipe sets: batch for DTd and DT-small, DTd's head init), tier 2c (DTd at lr 1e-3 with head init x0.1: the two
winners of a first seed together), then tier 2b (dtd 0.1's DTd, c23, bias right).
Records land in results/diagnosis/ (experiments/runner.py); tables: experiments/make_results.py.
"""

from __future__ import annotations

import sys

from runner import Job, main

DATASETS = ("halfcheetah-medium-replay", "hopper-medium-replay")
SEEDS = (0, 1)
STEPS, BATCH = 1000, 64  # samples per run: 64,000
COMMON = ("--weight_decay", "1e-4", "--grad_clip", "0.25", "--dropout", "0.1", "--context_len", "20",
          "--eval_episodes", "10", "--eval_untrained", "false", "--max_minutes", "0", "--threads", "1")
LEGACY = ("--model_opts", "timestep_tables=per_stream", "join_timestep=true", "embed_dropout=true",
          "cross_attn_dropout=true", "init=separate_qkv")  # dtd 0.1's default DTd


def budget(lr: str, batch: int = BATCH) -> tuple[str, ...]:
    """Equal samples at any batch; warm-up over the first 10% of the steps (the DT recipe's 10k of 100k)."""
    steps = STEPS * BATCH // batch
    at = lambda n: str(n * BATCH // batch)  # noqa: E731  the step where n x 64 samples have been seen
    return ("--lr", lr, "--batch_size", str(batch), "--steps", str(steps), "--warmup_steps", str(steps // 10),
            "--eval_every", at(500), "--ckpt_every", at(250), "--log_every", at(50),
            "--probe_steps", at(200), at(400), at(1000), *COMMON)


# cell name -> (model, extra arguments); the centre is "<model>-lr3e-4"
TIER1 = {f"{m}-lr{lr}": (m, budget(lr)) for lr in ("3e-4", "1e-3", "1e-4") for m in ("dtd", "dt-small", "bc")}
# Tier 2a: the factors a training recipe sets (batch, head init); 2b: what the diagnosis only explains.
TIER2A = {
    "dtd-b256": ("dtd", budget("3e-4", 256)),
    "dt-small-b256": ("dt-small", budget("3e-4", 256)),
    "dtd-head0.1": ("dtd", budget("3e-4") + ("--model_opts", "head_init_scale=0.1")),
}
# Tier 2c: the two DTd factors that each beat the centre in a first seed, together (does the recipe combine?)
TIER2C = {"dtd-lr1e-3-head0.1": ("dtd", budget("1e-3") + ("--model_opts", "head_init_scale=0.1"))}
TIER2B = {
    "dtd-legacy": ("dtd", budget("3e-4") + LEGACY),
    "dtd-c23": ("dtd", budget("3e-4") + ("--combiner", "c23")),
    "dtd-bias-right": ("dtd", budget("3e-4") + ("--bias", "right")),
}
TIER2 = {**TIER2A, **TIER2C, **TIER2B}


def jobs() -> list[Job]:
    """Seed by seed within each tier, so a partial grid has both seeds of the recipe's factors first."""
    out = []
    for tier in (TIER1, TIER2A, TIER2C, TIER2B):
        for seed in SEEDS:
            for data in DATASETS:
                for cell, (model, extra) in tier.items():
                    out.append(Job(f"{data}-{cell}-s{seed}", ("--config", f"{data}-{model}", *extra, "--seed", str(seed)),
                                   {"dataset": data, "cell": cell, "model": model, "seed": str(seed)}))
    return out


if __name__ == "__main__":
    sys.exit(main(__doc__, jobs(), "diagnosis"))
