"""Issue #16: bad invocations of every subcommand, as a table. Each row must exit 2 with exactly one
`dtd: error:` line, no traceback, and leave the working folder exactly as it was (files: path, size,
mtime; folders: path), so a refused command never destroys, half-writes or leaves anything behind.

Fixtures are real: a copy of a tiny trained run, a user's own folder, a regular file, a run that a
live lock holds, small SB3 policies and a VecNormalize file for the wrong environment.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dtd.cli import main
from dtd.paths import RunLock

CUDA = torch.cuda.is_available()
LINUX = sys.platform.startswith("linux")  # /proc: a folder nobody can write in, root included

TINY = ["--no-progress", "--hidden_size", "16", "--n_layer", "1", "--n_head", "2", "--model", "dt-small",
        "--context_len", "4", "--batch_size", "8", "--steps", "2", "--eval_episodes", "0",
        "--eval_untrained", "false", "--log_every", "0", "--ckpt_every", "0", "--threads", "1"]
T = ["train", *TINY]
E = ["eval", "runs/good"]
X = ["export", "runs/good"]
A = ["attention", "runs/good", "--windows", "2"]
B = ["bench", "--tiny", "--no-progress", "--no-naive", "--out", "b.json"]
IQ = ["iql", "train", "embedded:hopper", "--steps", "2", "--batch-size", "8", "--hidden", "8", "--n-layers", "2",
      "--log-every", "0", "--ckpt-every", "0", "--out-dir", "iqlruns"]
C = ["data", "collect", "--env", "Hopper-v5", "--steps", "20"]
CR = C + ["--policy", "random", "--out", "ds"]
M = ["data", "collect-maze", "--maze", "umaze", "--steps", "20"]

# (row id, argv, a fragment the error line must contain)
ROWS: list[tuple[str, list[str], str]] = [
    # --- usage errors (argparse) are one error line too
    ("no-such-command", ["nosuch"], "invalid choice"),
    ("data-no-subcommand", ["data"], "choose a subcommand"),
    ("iql-no-subcommand", ["iql"], "choose a subcommand"),
    ("train-unknown-flag", T + ["--nosuch", "1"], "unrecognized arguments"),
    ("train-int-type", T + ["--batch_size", "x"], "--batch_size expects int"),
    ("train-bool-type", T + ["--delayed", "maybe"], "--delayed expects bool"),
    ("eval-missing-run", ["eval"], "required"),
    ("eval-vector-choice", E + ["--vector", "nope"], "invalid choice"),
    ("export-missing-out", ["export", "runs/good"], "required"),
    ("export-format-choice", X + ["--format", "nope", "--out", "p.pt"], "invalid choice"),
    ("attention-layer-choice", A + ["--layer", "nope"], "invalid choice"),
    ("bench-int-type", B + ["--steps", "x"], "invalid"),
    ("iql-missing-dataset", ["iql", "train"], "required"),
    ("collect-missing-env", ["data", "collect", "--policy", "random", "--steps", "5"], "required"),
    ("maze-choice", M + ["--maze", "huge"], "invalid choice"),
    ("report-missing-runs", ["report"], "required"),
    # --- run names and --force: never outside out_dir, never a folder that is not a run
    ("train-name-dot", T + ["--run_name", ".", "--force"], "plain folder name"),
    ("train-name-dotdot", T + ["--run_name", "..", "--force"], "plain folder name"),
    ("train-name-escape", T + ["--run_name", "../escape"], "plain folder name"),
    ("train-name-slash", T + ["--run_name", "a/b"], "plain folder name"),
    ("train-name-hidden", T + ["--run_name", ".hidden"], "plain folder name"),
    ("train-force-user-folder", T + ["--out_dir", ".", "--run_name", "mydata", "--force"], "not a dtd run folder"),
    ("train-force-file", T + ["--out_dir", ".", "--run_name", "file.txt", "--force"], "not a dtd run folder"),
    ("train-existing-run", T + ["--run_name", "good"], "run folder exists"),
    ("train-force-live-run", T + ["--run_name", "locked", "--force"], "training this run right now"),
    ("train-second-trainer", T + ["--run_name", "locked"], "training this run right now"),
    ("train-resume-live-run", ["train", "--resume", "runs/locked", "--steps", "10"], "training this run right now"),
    ("train-resume-user-folder", ["train", "--resume", "mydata"], "not a dtd run folder"),
    ("train-resume-nowhere", ["train", "--resume", "nowhere"], "no such run folder"),
    ("train-resume-with-config", ["train", "--resume", "runs/good", "--config", "quick"], "cannot be combined"),
    ("train-resume-changes-lr", ["train", "--resume", "runs/good", "--lr", "1"], "not lr"),
    ("train-resume-done", ["train", "--resume", "runs/good"], "already trained"),
    ("iql-name-dotdot", IQ + ["--run-name", "..", "--force"], "plain folder name"),
    ("iql-name-escape", IQ + ["--run-name", "../x"], "plain folder name"),
    ("iql-force-user-folder", IQ + ["--out-dir", ".", "--run-name", "mydata", "--force"], "not a dtd run folder"),
    ("iql-existing-run", IQ + ["--out-dir", "runs", "--run-name", "good"], "run folder exists"),
    ("iql-force-live-run", IQ + ["--out-dir", "runs", "--run-name", "locked", "--force"], "right now"),
    # --- output locations, checked before any work
    ("train-outdir-file", T + ["--out_dir", "file.txt"], "not a folder"),
    ("train-outdir-under-file", T + ["--out_dir", "file.txt/sub"], "is a file"),
    ("iql-outdir-file", IQ + ["--out-dir", "file.txt"], "not a folder"),
    ("eval-result-is-folder", ["eval", "runs/evaldir"], "is a folder"),
    ("export-out-folder", X + ["--out", "adir"], "is a folder"),
    ("export-out-slash", X + ["--out", "newdir/"], "names a folder"),
    ("export-out-under-file", X + ["--out", "file.txt/p.pt"], "is a file"),
    ("export-ts-as-onnx", X + ["--out", "p.onnx"], "not ending in .onnx"),
    ("export-onnx-as-pt", X + ["--format", "onnx", "--out", "p.pt"], "ending in .onnx"),
    ("attention-out-file", A + ["--out", "file.txt"], "not a folder"),
    ("attention-out-under-file", A + ["--out", "file.txt/sub"], "is a file"),
    ("attention-compare-out-file", ["attention", "--compare", "runs/good", "runs/evaldir", "--out", "file.txt"],
     "not a folder"),
    ("report-out-file", ["report", "runs/good", "--out", "file.txt"], "not a folder"),
    ("report-out-under-file", ["report", "runs/good", "--out", "file.txt/sub"], "is a file"),
    ("bench-out-folder", B[:-2] + ["--out", "adir"], "is a folder"),
    ("bench-out-under-file", B[:-2] + ["--out", "file.txt/b.json"], "is a file"),
    ("collect-out-under-file", C + ["--policy", "random", "--out", "file.txt/ds"], "not a folder"),
    ("collect-out-exists", C + ["--policy", "random", "--out", "mydata"], "already exists"),
    ("collect-out-is-file", C + ["--policy", "random", "--out", "file.txt"], "already exists"),
    ("maze-out-under-file", M + ["--out", "file.txt/ds"], "not a folder"),
    ("maze-out-exists", M + ["--out", "mydata"], "already exists"),
    ("train-outdir-empty", T + ["--out_dir", ""], "empty path"),
    ("export-out-empty", X + ["--out", ""], "empty path"),
    ("attention-out-empty", A + ["--out", ""], "empty path"),
    ("collect-out-empty", CR[:-1] + [""], "empty path"),
    ("maze-out-empty", M + ["--out", ""], "empty path"),
    ("report-out-empty", ["report", "runs/good", "--out", ""], "empty path"),
    # --- values that must be refused
    ("train-lr-inf", T + ["--lr", "inf"], "finite"),
    ("train-lr-nan", T + ["--lr", "nan"], "finite"),
    ("train-lr-neg-inf", T + ["--lr=-inf"], "finite"),
    ("train-reward-scale-inf", T + ["--reward_scale", "inf"], "finite"),
    ("train-max-minutes-inf", T + ["--max_minutes", "inf"], "finite"),
    ("train-targets-inf", T + ["--eval_targets", "3600", "inf"], "finite"),
    ("train-yaml-inf", T + ["--config", "cfg/inf.yaml"], "finite"),
    ("train-steps-0", T + ["--steps", "0"], "--steps must be >= 1"),
    ("train-seed-neg", T + ["--seed", "-1"], "--seed must be >= 0"),
    ("train-dropout-1", T + ["--dropout", "1"], "dropout must be"),
    ("train-no-preset", T + ["--config", "no-such-preset"], "no such file"),
    ("train-model-unknown", T + ["--model", "nosuch"], "unknown model"),
    ("train-dataset-missing", T + ["--dataset", "data/missing.pkl"], "no such file"),
    ("train-join-empty-right", T + ["--dataset", "embedded:hopper+"], "'+' join"),
    ("train-join-empty-left", T + ["--dataset", "+embedded:hopper"], "'+' join"),
    ("train-obs-not-1d", T + ["--dataset", "data/nd.pkl"], "observations have shape"),
    ("train-env-mismatch", T + ["--env_id", "Walker2d-v5", "--eval_episodes", "1"], "do not match"),
    ("eval-max-steps-0", E + ["--max-steps", "0"], "--max-steps must be >= 1"),
    ("eval-max-steps-neg", E + ["--max-steps", "-1"], "--max-steps must be >= 1"),
    ("eval-episodes-0", E + ["--episodes", "0"], "--episodes must be >= 1"),
    ("eval-workers-0", E + ["--workers", "0"], "--workers must be >= 1"),
    ("eval-seed-neg", E + ["--seed", "-1"], "--seed must be >= 0"),
    ("eval-targets-inf", E + ["--targets", "inf"], "finite"),
    ("eval-targets-nan", E + ["--targets", "3600", "nan"], "finite"),
    ("eval-no-checkpoint", E + ["--checkpoint", "step_9"], "no checkpoint"),
    ("eval-checkpoint-path", E + ["--checkpoint", "../x"], "not a checkpoint name"),
    ("eval-user-folder", ["eval", "mydata"], "not a dtd run folder"),
    ("eval-nowhere", ["eval", "nowhere"], "no such run folder"),
    ("export-user-folder", ["export", "mydata", "--out", "p.pt"], "not a dtd run folder"),
    ("attention-windows-0", A + ["--windows", "0"], "--windows must be >= 1"),
    ("attention-seed-neg", A + ["--seed", "-1"], "--seed must be >= 0"),
    ("attention-run-and-compare", ["attention", "runs/good", "--compare", "a", "b"], "not both"),
    ("attention-no-run", ["attention"], "give a RUN_DIR"),
    ("attention-user-folder", ["attention", "mydata"], "not a dtd run folder"),
    ("attention-compare-missing", ["attention", "--compare", "runs/good", "nowhere", "--out", "cmp"],
     "no such run folder"),
    ("attention-compare-same-name", ["attention", "--compare", "runs/good", "mydata/../runs/good"], "collide"),
    ("attention-bad-dataset", A + ["--dataset", "embedded:hopper+", "--out", "att"], "'+' join"),
    ("report-user-folder", ["report", "mydata", "--out", "rep"], "not a dtd run folder"),
    ("report-nowhere", ["report", "nowhere", "--out", "rep"], "not a dtd run folder"),
    ("report-no-evaluation", ["report", "runs/good", "--out", "rep"], "no evaluation yet"),
    ("bench-steps-0", B + ["--steps", "0"], ">= 1"),
    ("bench-batch-0", B + ["--batch-sizes", "0"], ">= 1"),
    ("bench-episodes-0", B + ["--eval-episodes", "0"], ">= 1"),
    ("bench-eval-max-steps-0", B + ["--eval-max-steps", "0"], "--eval-max-steps"),
    ("bench-threads-0", B + ["--threads", "0"], "threads must be >= 1"),
    ("bench-ddp-neg", B + ["--ddp", "-1"], "--ddp"),
    ("bench-preset-unknown", B + ["--presets", "nosuch"], "unknown preset"),
    ("bench-variant-empty-part", B + ["--variants", "bf16+"], "unknown variant"),
    ("bench-run-user-folder", B + ["--run", "mydata"], "not a dtd run folder"),
    ("iql-lr-inf", IQ + ["--lr", "inf"], "finite"),
    ("iql-discount-nan", IQ + ["--discount", "nan"], "finite"),
    ("iql-discount-1", IQ + ["--discount", "1"], "--discount must be in (0, 1)"),
    ("iql-tau-0", IQ + ["--tau", "0"], "--tau must be in"),
    ("iql-reward-scale-inf", IQ + ["--reward-scale", "inf"], "finite"),
    ("iql-steps-0", IQ + ["--steps", "0"], "--steps must be >= 1"),
    ("iql-hidden-0", IQ + ["--hidden", "0"], "hidden must be >= 1"),
    ("iql-join-empty", ["iql", "train", "embedded:hopper+", "--out-dir", "iqlruns"], "'+' join"),
    ("info-obs-not-1d", ["data", "info", "data/nd.pkl"], "observations have shape"),
    ("info-join-empty-middle", ["data", "info", "embedded:hopper++embedded:hopper"], "'+' join"),
    ("info-unknown-embedded", ["data", "info", "embedded:nope"], "no such embedded dataset"),
    ("info-unknown-env", ["data", "info", "--env", "Nope-v9"], "unknown environment"),
    ("info-env-mismatch", ["data", "info", "--env", "Walker2d-v5"], "do not match"),
    ("collect-noise-inf", CR + ["--noise", "inf"], "finite"),
    ("collect-noise-neg", CR + ["--noise", "-1"], "--noise"),
    ("collect-ref-equal", CR + ["--ref-min", "5", "--ref-max", "5"], "must be below"),
    ("collect-ref-reversed", CR + ["--ref-min", "10", "--ref-max", "1"], "must be below"),
    ("collect-ref-one-only", CR + ["--ref-min", "1"], "both or neither"),
    ("collect-ref-inf", CR + ["--ref-max", "inf"], "finite"),
    ("collect-seed-neg", CR + ["--seed", "-1"], "--seed"),
    ("collect-steps-0", C[:-2] + ["--steps", "0", "--policy", "random", "--out", "ds"], "--steps"),
    ("collect-random-vecnormalize", CR + ["--vecnormalize", "pol/vn.pkl"], "not to --policy random"),
    ("collect-random-algo", CR + ["--algo", "ppo"], "not to --policy random"),
    ("collect-policy-wrong-env", C + ["--policy", "pol/pendulum.zip", "--out", "ds"], "does not match"),
    ("collect-vecnormalize-wrong-env", C + ["--policy", "pol/hopper.zip", "--vecnormalize", "pol/vn.pkl",
                                            "--out", "ds"], "do not fit"),
    ("collect-vecnormalize-missing", C + ["--policy", "pol/hopper.zip", "--vecnormalize", "pol/no.pkl",
                                          "--out", "ds"], "no such VecNormalize file"),
    ("collect-policy-missing", C + ["--policy", "pol/missing.zip", "--out", "ds"], "no such policy file"),
    ("collect-policy-not-sb3", C + ["--policy", "file.txt", "--out", "ds"], "not a Stable-Baselines3"),
    ("collect-algo-unknown", C + ["--policy", "pol/hopper.zip", "--algo", "nosuch", "--out", "ds"],
     "unknown algorithm"),
    ("collect-discrete-env", ["data", "collect", "--env", "CartPole-v1", "--policy", "random", "--steps", "5",
                              "--out", "ds"], "not a 1-D Box"),
    ("collect-unknown-env", ["data", "collect", "--env", "Nope-v9", "--policy", "random", "--steps", "5",
                             "--out", "ds"], "unknown environment"),
    ("collect-bad-dataset-id", C + ["--policy", "random", "--dataset-id", "no version"], "--dataset-id"),
    ("maze-noise-nan", M + ["--noise", "nan", "--out", "ds"], "finite"),
    ("maze-noise-neg", M + ["--noise", "-1", "--out", "ds"], "--noise"),
    ("maze-steps-0", M[:-2] + ["--steps", "0", "--out", "ds"], "--steps"),
    ("maze-seed-neg", M + ["--seed", "-1", "--out", "ds"], "--seed"),
    ("maze-bad-dataset-id", M + ["--dataset-id", "no version"], "--dataset-id"),
    # --- devices: one resolver for every command
    ("train-device-tpu", T + ["--device", "tpu"], "unknown device"),
    ("train-device-gpu", T + ["--device", "gpu"], "unknown device"),
    ("train-device-cuda-x", T + ["--device", "cuda:x"], "unknown device"),
    ("train-device-cpu-index", T + ["--device", "cpu:1"], "unknown device"),
    ("train-compile-unknown", T + ["--compile", "fast"], "--compile must be one of"),
    ("train-resume-device-tpu", ["train", "--resume", "runs/good", "--steps", "10", "--device", "tpu"],
     "unknown device"),
    ("eval-device-tpu", E + ["--device", "tpu"], "unknown device"),
    ("attention-device-tpu", A + ["--device", "tpu"], "unknown device"),
    ("bench-device-tpu", B + ["--device", "tpu"], "unknown device"),
    ("iql-device-tpu", IQ + ["--device", "tpu"], "unknown device"),
]
BIG = str(10**12)  # a size no machine holds
HUGE = str(10**30)  # a size past the 64-bit integers numpy and torch use
# issue #32: reliability, round two (every class of the issue; fixtures made in `work`)
ROWS_32: list[tuple[str, list[str], str]] = [
    # --- sizes too large for the machine: one line saying how much memory it needs
    ("train-batch-huge", T + ["--batch_size", BIG], "needs at least"),
    ("train-hidden-huge", T + ["--hidden_size", "1000000"], "needs at least"),
    ("train-max-ep-len-huge", T + ["--max_ep_len", BIG], "needs at least"),
    ("train-context-and-ep-len-huge", T + ["--context_len", BIG, "--max_ep_len", BIG], "needs at least"),
    ("eval-episodes-huge", E + ["--episodes", BIG], "needs at least"),
    ("eval-episodes-huge-max-steps-huge", E + ["--episodes", BIG, "--max-steps", BIG], "needs at least"),
    ("iql-batch-huge", IQ + ["--batch-size", BIG], "needs at least"),
    ("iql-n-layers-huge", IQ + ["--n-layers", BIG], "needs at least"),  # counted, not built: no 10**12 modules
    ("iql-hidden-overflow", IQ + ["--hidden", HUGE], "too large to build"),
    ("iql-batch-overflow", IQ + ["--batch-size", HUGE], "needs at least"),
    ("train-n-layer-huge", T + ["--n_layer", BIG], "needs at least"),
    ("train-join-layers-huge", T + ["--model", "dtd", "--n_head", "1", "--model_opts", f"n_join_layer={BIG}"],
     "needs at least"),
    ("train-max-ep-len-overflow", T + ["--max_ep_len", HUGE], "too large to build"),
    ("train-hidden-overflow", T + ["--hidden_size", HUGE], "too large to build"),
    ("train-threads-overflow", T + ["--threads", HUGE], "a size given is too large"),
    ("eval-episodes-overflow", E + ["--episodes", HUGE], "needs at least"),
    ("attention-windows-huge", A[:-2] + ["--windows", BIG], "needs at least"),
    ("bench-batch-overflow", B + ["--batch-sizes", HUGE], "a size given is too large"),
    ("train-eval-episodes-huge", T + ["--eval_episodes", BIG], "needs at least"),  # before training, not after
    ("bench-eval-episodes-huge", B + ["--eval-episodes", BIG], "out of memory: an allocation of"),
    ("bench-batch-huge", B + ["--batch-sizes", BIG], "out of memory: an allocation of"),
    # --- seeds numpy cannot take
    ("train-seed-2-32", T + ["--seed", str(2**32)], "< 2**32"),
    ("eval-seed-2-32", E + ["--seed", str(2**32)], "< 2**32"),
    ("attention-seed-2-32", A + ["--seed", str(2**32)], "< 2**32"),
    ("iql-seed-2-32", IQ + ["--seed", str(2**32)], "< 2**32"),
    ("collect-seed-2-32", CR + ["--seed", str(2**40)], "< 2**32"),
    ("maze-seed-2-32", M + ["--seed", str(2**32), "--out", "ds"], "< 2**32"),
    ("train-yaml-seed-2-32", T + ["--config", "cfg/bigseed.yaml"], "< 2**32"),
    # --- YAML and --config
    ("train-yaml-base-not-names", T + ["--config", "cfg/base-int.yaml"], "'base:' expects a preset name"),
    ("train-yaml-base-mapping", T + ["--config", "cfg/base-map.yaml"], "'base:' expects a preset name"),
    ("train-yaml-binary", T + ["--config", "cfg/binary.yaml"], "not UTF-8"),
    ("train-yaml-duplicate-key", T + ["--config", "cfg/dup.yaml"], "appears twice"),
    ("train-yaml-duplicate-option", T + ["--config", "cfg/dup-option.yaml"], "appears twice"),
    ("train-yaml-two-spellings", T + ["--config", "cfg/two-spellings.yaml"], "set twice"),
    ("train-config-folder", T + ["--config", "adir"], "is a folder"),
    ("train-config-fifo", T + ["--config", "data/fifo.pkl"], "not a regular file"),
    # --- conflicting settings on the command line
    ("train-opts-and-flag", T + ["--model_opts", "hidden_size=64", "--hidden_size", "32"], "set twice"),
    ("train-opts-twice", T + ["--model_opts", "n_layer=1", "n_layer=2"], "set twice"),
    ("train-flag-and-opts-bias", ["train", "--model", "dtd", "--bias", "left", "--model_opts", "bias=right"],
     "set twice"),
    # --- model option ranges
    ("train-ff-dim-0", T + ["--model", "dtd", "--model_opts", "ff_dim=0"], "ff_dim must be >= 1"),
    ("train-n-join-layer-neg", T + ["--model", "dtd", "--model_opts", "n_join_layer=-1"], "n_join_layer must be >= 1"),
    ("train-join-ff-dim-0", T + ["--model", "dtd", "--model_opts", "join_ff_dim=0"], "join_ff_dim must be >= 1"),
    ("train-join-heads-0", T + ["--model", "dtd", "--model_opts", "join_n_head=0"], "join_n_head must be >= 1"),
    ("train-ff-mult-0", T + ["--model_opts", "ff_mult=0"], "ff_mult must be >= 1"),
    ("train-n-layer-0", T + ["--n_layer", "0"], "n_layer must be >= 1"),
    ("train-bc-layers-neg", T + ["--model", "bc", "--n_head", "none", "--n_layer", "-2"], "n_layer must be >= 1"),
    ("train-dropout-nan-opts", T + ["--model_opts", "dropout=nan"], "dropout must be"),
    ("train-heads-do-not-divide", T + ["--n_head", "3"], "multiple of n_head"),
    ("train-yaml-ff-dim-0", T + ["--model", "dtd", "--config", "cfg/ff0.yaml"], "ff_dim must be >= 1"),
    ("iql-n-layers-0", IQ + ["--n-layers", "0"], "n_layers must be >= 1"),
    # --- run names: printable only
    ("train-name-newline", T + ["--run_name", "a\nb"], "printable"),
    ("train-name-tab", T + ["--run_name", "a\tb"], "printable"),
    ("train-name-escape-seq", T + ["--run_name", "\x1b[31mred"], "printable"),
    ("iql-name-newline", IQ + ["--run-name", "a\nb"], "printable"),
    # --- non-finite targets and weights
    ("train-target-overflows", T + ["--eval_targets", "1e300"], "not finite at reward scale"),
    ("train-scale-makes-overflow", T + ["--reward_scale", "1e-300", "--eval_targets", "3600"],
     "not finite at reward scale"),
    ("eval-target-overflows", E + ["--targets", "1e300"], "not finite at reward scale"),
    ("eval-target-neg-overflows", E + ["--targets=-1e300"], "not finite at reward scale"),
    ("eval-nan-weights", ["eval", "runs/nanrun"], "weights are not finite"),
    ("export-nan-weights", ["export", "runs/nanrun", "--out", "p.pt"], "weights are not finite"),
    ("export-onnx-nan-weights", ["export", "runs/nanrun", "--format", "onnx", "--out", "p.onnx"],
     "weights are not finite"),
    ("attention-nan-weights", ["attention", "runs/nanrun", "--windows", "2"], "weights are not finite"),
    ("bench-run-nan-weights", B + ["--run", "runs/nanrun"], "weights are not finite"),
    # --- an IQL critic run given to the policy commands
    ("eval-critic-run", ["eval", "runs/critic"], "dtd train --goal iql --critic"),
    ("eval-critic-checkpoint", ["eval", "runs/critic/checkpoints/last.pt"], "an IQL critic run"),
    ("export-critic-run", ["export", "runs/critic", "--out", "p.pt"], "dtd train --goal iql --critic"),
    ("attention-critic-run", ["attention", "runs/critic", "--windows", "2"], "an IQL critic run"),
    ("bench-run-critic", B + ["--run", "runs/critic"], "an IQL critic run"),
    ("train-resume-critic", ["train", "--resume", "runs/critic", "--steps", "10"], "not a `dtd train` run"),
    ("train-critic-is-policy-run", T + ["--goal", "iql", "--critic", "runs/good"], "not an IQL critic"),
    # --- a run whose inputs changed
    ("report-metrics-not-utf8", ["report", "runs/badmetrics", "--out", "rep"], "not a JSON line (UTF-8 text)"),
    ("report-metrics-null-step", ["report", "runs/nullstep", "--out", "rep"], "without an integer step"),
    ("train-resume-dataset-changed", ["train", "--resume", "runs/filerun", "--steps", "4"], "states of size 5"),
    ("attention-run-dataset-gone", ["attention", "runs/gonerun", "--windows", "2"], "--dataset names another"),
    ("attention-other-state-size", A + ["--dataset", "data/other.pkl"], "states of size 5"),
    # --- messages that say what is wrong
    ("train-dataset-fifo", T + ["--dataset", "data/fifo.pkl"], "not a regular file"),
    ("info-fifo", ["data", "info", "data/fifo.pkl"], "not a regular file"),
    ("iql-dataset-fifo", ["iql", "train", "data/fifo.pkl", "--out-dir", "iqlruns"], "not a regular file"),
    ("info-rewards-2-columns", ["data", "info", "data/rew2.hdf5"], "rewards have shape (20, 2)"),
    ("train-rewards-2-columns", T + ["--dataset", "data/rew2.hdf5"], "rewards have shape (20, 2)"),
    ("collect-policy-data-list", C + ["--policy", "pol/list.zip", "--out", "ds"], "not a Stable-Baselines3"),
    ("collect-policy-data-not-json", C + ["--policy", "pol/binary.zip", "--out", "ds"], "not a Stable-Baselines3"),
    ("collect-policy-class-string", C + ["--policy", "pol/pcstr.zip", "--out", "ds"], "cannot tell the algorithm"),
    ("eval-checkpoint-file-and-name", ["eval", "runs/stepped/checkpoints/step_0000001.pt", "--checkpoint", "last"],
     "names another one"),
]
# issue #32, data loss: each must leave the run exactly as it was (same last.pt bytes, same metrics)
DATA_LOSS_ROWS: list[tuple[str, list[str], str]] = [
    ("export-over-last-pt", X + ["--out", "runs/stepped/checkpoints/last.pt"], "inside the run"),
    ("export-over-step-pt", X + ["--out", "runs/stepped/checkpoints/step_0000001.pt"], "inside the run"),
    ("export-into-checkpoints", X + ["--out", "runs/stepped/checkpoints/new.pt"], "inside the run"),
    ("export-into-checkpoints-via-dotdot", X + ["--out", "runs/good/../stepped/checkpoints/last.pt"], "inside the run"),
    ("export-onnx-into-checkpoints", X + ["--format", "onnx", "--out", "runs/stepped/checkpoints/p.onnx"],
     "inside the run"),
    ("export-over-checkpoint-copy", X + ["--out", "backup.pt"], "is a dtd checkpoint"),
    ("bench-over-checkpoint-copy", B[:-2] + ["--out", "backup.pt"], "is a dtd checkpoint"),
    ("bench-into-checkpoints", B[:-2] + ["--out", "runs/stepped/checkpoints/b.json"], "inside the run"),
    ("attention-into-checkpoints", A + ["--out", "runs/stepped/checkpoints"], "inside the run"),
    ("report-into-checkpoints", ["report", "runs/good", "--out", "runs/stepped/checkpoints/rep"], "inside the run"),
    ("train-resume-from-step-file", ["train", "--resume", "runs/stepped/checkpoints/step_0000001.pt", "--steps", "5"],
     "would rewind the run"),
    ("train-resume-from-copied-file", ["train", "--resume", "backup.pt", "--steps", "5"], "would rewind the run"),
    ("train-resume-step-file-more-steps", ["train", "--resume", "runs/stepped/checkpoints/step_0000001.pt"],
     "would rewind the run"),
]
CUDA_ROWS = [  # on a machine without CUDA: one clear error each
    ("train-device-cuda", T + ["--device", "cuda"], "CUDA is not available"),
    ("train-device-cuda0", T + ["--device", "cuda:0"], "CUDA is not available"),
    ("eval-device-cuda", E + ["--device", "cuda"], "CUDA is not available"),
    ("eval-device-cuda1", E + ["--device", "cuda:1"], "CUDA is not available"),
    ("attention-device-cuda", A + ["--device", "cuda"], "CUDA is not available"),
    ("bench-device-cuda", B + ["--device", "cuda"], "CUDA is not available"),
    ("iql-device-cuda", IQ + ["--device", "cuda"], "CUDA is not available"),
]
PROC_ROWS = [  # a folder nobody may write in (root included)
    ("train-outdir-unwritable", T + ["--out_dir", "/proc/dtd-runs"], "/proc"),
    ("export-out-unwritable", X + ["--out", "/proc/p.pt"], "/proc"),
    ("attention-out-unwritable", A + ["--out", "/proc/att"], "/proc"),
    ("report-out-unwritable", ["report", "runs/good", "--out", "/proc/rep"], "/proc"),
    ("bench-out-unwritable", B[:-2] + ["--out", "/proc/b.json"], "/proc"),
    ("collect-out-unwritable", C + ["--policy", "random", "--out", "/proc/ds"], "/proc"),
    ("maze-out-unwritable", M + ["--out", "/proc/ds"], "/proc"),
    ("iql-outdir-unwritable", IQ + ["--out-dir", "/proc/iql"], "/proc"),
]


def _params():
    out = [pytest.param(argv, frag, id=rid) for rid, argv, frag in ROWS + ROWS_32 + DATA_LOSS_ROWS]
    out += [pytest.param(argv, frag, id=rid, marks=pytest.mark.skipif(CUDA, reason="CUDA is present"))
            for rid, argv, frag in CUDA_ROWS]
    out += [pytest.param(argv, frag, id=rid, marks=pytest.mark.skipif(not LINUX, reason="needs /proc"))
            for rid, argv, frag in PROC_ROWS]
    return out


def test_the_table_is_large_enough():
    every = ROWS + ROWS_32 + DATA_LOSS_ROWS + CUDA_ROWS + PROC_ROWS
    assert len(ROWS) + len(CUDA_ROWS) + len(PROC_ROWS) >= 100
    assert len(ROWS_32) + len(DATA_LOSS_ROWS) >= 60  # issue #32's classes
    assert len({r[0] for r in every}) == len(every)


@pytest.fixture(scope="module")
def work(tiny_runs, tmp_path_factory):
    """The working folder every row runs in."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    root = tmp_path_factory.mktemp("work")
    runs = root / "runs"
    for name in ("good", "evaldir", "locked"):
        shutil.copytree(tiny_runs["dt"], runs / name)
    (runs / "evaldir" / "eval-last.json").mkdir()  # a folder where eval writes its result file
    (root / "mydata").mkdir()
    (root / "mydata" / "notes.txt").write_text("the user's own file\n")
    (root / "file.txt").write_text("a regular file\n")
    (root / "adir").mkdir()
    (root / "cfg").mkdir()
    (root / "cfg" / "inf.yaml").write_text("lr: .inf\n")
    (root / "data").mkdir()
    trajs = [{"observations": np.zeros((10, 2, 3), np.float32), "actions": np.zeros((10, 3), np.float32),
              "rewards": np.ones(10, np.float32), "terminals": np.eye(10, dtype=bool)[-1]}]
    (root / "data" / "nd.pkl").write_bytes(pickle.dumps(trajs))
    (root / "pol").mkdir()
    PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=64, device="cpu").save(root / "pol" / "pendulum.zip")
    PPO("MlpPolicy", gym.make("Hopper-v5"), n_steps=64, batch_size=64, device="cpu").save(root / "pol" / "hopper.zip")
    VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")])).save(root / "pol" / "vn.pkl")
    _issue_32_fixtures(root)
    lock = RunLock(runs / "locked").acquire()  # a run some live process is training
    yield root
    lock.release()


def _issue_32_fixtures(root: Path) -> None:
    """A run with periodic checkpoints, an IQL critic run, a run with NaN weights, a run whose dataset file
    changed since and one whose dataset is gone, a copied checkpoint, bad YAML files, a FIFO, bad datasets and
    malformed policy zips."""
    import zipfile

    import h5py

    runs = root / "runs"
    tiny = ["--out_dir", str(runs), "--no-progress"]
    assert main(T + tiny + ["--run_name", "stepped", "--ckpt_every", "1", "--log_every", "1"]) == 0
    assert main(IQ[:-2] + ["--out-dir", str(runs), "--run-name", "critic"]) == 0
    shutil.copyfile(runs / "stepped" / "checkpoints" / "last.pt", root / "backup.pt")
    for name, line in (("badmetrics", b"\xff\xfe not utf-8\n"),
                       ("nullstep", b'{"step": null, "eval": {"3600": {"return_mean": 1.0}}}\n')):
        shutil.copytree(runs / "good", runs / name)
        (runs / name / "eval.json").write_text('{"targets": {"3600": {"return_mean": 1.0}}}')
        with open(runs / name / "metrics.jsonl", "ab") as fh:
            fh.write(line)
    shutil.copytree(runs / "good", runs / "nanrun")
    ckpt = torch.load(runs / "nanrun" / "checkpoints" / "last.pt", weights_only=False)
    next(v for v in ckpt["model"].values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(ckpt, runs / "nanrun" / "checkpoints" / "last.pt")

    def trajs(obs_dim: int) -> bytes:
        rng = np.random.default_rng(0)
        return pickle.dumps([{"observations": rng.normal(size=(20, obs_dim)).astype(np.float32),
                              "actions": rng.uniform(-1, 1, (20, 3)).astype(np.float32),
                              "rewards": np.ones(20, np.float32), "terminals": np.eye(20, dtype=bool)[-1]}] * 2)

    (root / "data" / "small.pkl").write_bytes(trajs(11))
    assert main(T + tiny + ["--run_name", "filerun", "--dataset", str(root / "data" / "small.pkl")]) == 0
    (root / "data" / "small.pkl").write_bytes(trajs(5))  # the run's dataset file, changed since
    (root / "data" / "gone.pkl").write_bytes(trajs(11))
    assert main(T + tiny + ["--run_name", "gonerun", "--dataset", str(root / "data" / "gone.pkl")]) == 0
    (root / "data" / "gone.pkl").unlink()  # the run's dataset, moved away since
    (root / "data" / "other.pkl").write_bytes(trajs(5))
    os.mkfifo(root / "data" / "fifo.pkl")
    with h5py.File(root / "data" / "rew2.hdf5", "w") as f:
        for key, value in {"observations": np.zeros((20, 11)), "actions": np.zeros((20, 3)),
                           "rewards": np.zeros((20, 2)), "terminals": np.eye(20, dtype=bool)[-1]}.items():
            f[key] = value
    cfg = root / "cfg"
    (cfg / "bigseed.yaml").write_text(f"seed: {2**32}\n")
    (cfg / "base-int.yaml").write_text("base: [quick, 5]\n")
    (cfg / "base-map.yaml").write_text("base: {quick: 1}\n")
    (cfg / "binary.yaml").write_bytes(bytes(range(256)))
    (cfg / "dup.yaml").write_text("lr: 0.001\nsteps: 2\nlr: 0.002\n")
    (cfg / "dup-option.yaml").write_text("model_options:\n  hidden_size: 16\n  hidden_size: 32\n")
    (cfg / "two-spellings.yaml").write_text("hidden_size: 16\nmodel_options: {hidden_size: 32}\n")
    (cfg / "ff0.yaml").write_text("model_options: {ff_dim: 0}\n")
    for name, data in (("list.zip", b"[1, 2]"), ("binary.zip", bytes(range(256))), ("pcstr.zip", b'{"policy_class": "x"}')):
        with zipfile.ZipFile(root / "pol" / name, "w") as zf:
            zf.writestr("data", data)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: files by (size, mtime), folders by their presence."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = ("dir",)
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def fingerprint(run: Path) -> tuple[bytes, bytes, list[str]]:
    """What a data-loss row must leave as it was: last.pt's bytes, the metrics, the checkpoint names."""
    return ((run / "checkpoints" / "last.pt").read_bytes(), (run / "metrics.jsonl").read_bytes(),
            sorted(p.name for p in (run / "checkpoints").iterdir()))


@pytest.mark.parametrize("argv, fragment", _params())
def test_bad_invocation(argv, fragment, work, monkeypatch, capsys):
    monkeypatch.chdir(work)
    runs = {name: fingerprint(work / "runs" / name) for name in ("good", "stepped")}
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(work / "minari"))
    threads = torch.get_num_threads()
    before = snapshot(work)
    try:
        code = main(list(argv))
    finally:
        torch.set_num_threads(threads)  # a row may set --threads; later tests must not inherit it
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("dtd: error:")]
    assert code == 2, (code, err)
    assert len(errors) == 1, err
    assert "Traceback" not in err + out
    assert fragment in errors[0], errors[0]
    assert snapshot(work) == before, "the working folder changed"
    assert runs == {name: fingerprint(work / "runs" / name) for name in runs}, "a run changed"
