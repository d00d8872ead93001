"""Multimodal attention quantification: how a trained model spreads attention over goal, state, action.

The paper (Figure 1) measures, for a trained Decision Transformer, how much attention mass queries of one
modality put on keys of another. Recipe (spec, "Multimodal attention quantification"):

- take one attention map over the interleaved window: the last layer (or the mean over layers), averaged
  over heads; tokens are ordered (g_1, s_1, a_1, g_2, ...), so goal = 3i, state = 3i+1, action = 3i+2;
- for each ordered modality pair (X, Y) sum the mass that X-queries put on Y-keys (9 scores rr ... aa);
- where Y comes after X inside a timestep (goal->state, goal->action, state->action) zero the
  same-timestep entries first (under a causal mask they are zero anyway; the rule matters for maps that
  are not causal);
- only the valid (unpadded) part of a window counts; merge symmetric pairs for 6 scores.

Mass identity (tested): the 9 scores of a window sum to the total mass of its valid block minus the
zeroed same-timestep entries; for a causal softmax map over a right-padded window of n valid steps that
is exactly the number of valid query tokens (3n for DT), because each valid row sums to 1 over valid keys.

For DTd the same counting runs on its join network, whose tokens are (s_t, a_t) or (g_t, s_t, a_t)
with ``join_all``; goal rows/columns are then zero unless ``join_all``. Its goal->state/action
information flows through the biasing cross-attention instead, summarised by its entropy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from dtd.data.loaders import load_dataset
from dtd.data.sampler import SequenceSampler
from dtd.errors import DtdError
from dtd import goals
from dtd.envs import make_env
from dtd.config import check_seed
from dtd.device import check_memory
from dtd.paths import check_output_dir, check_output_file, make_dirs, remove_made, write_all_atomic, write_atomic
from dtd.policy import Policy, goal_for_run
from dtd.runs import RunInfo, check_dataset_fits, load_critic, load_run

MODALITIES = ("r", "s", "a")  # the paper calls the goal token R (return-to-go)
MODALITY_NAMES = ("goal (R)", "state (s)", "action (a)")
SCORE_NAMES = [q + k for q in MODALITIES for k in MODALITIES]  # rr rs ra sr ss sa ar as aa
SYMMETRIC_NAMES = ["rr", "ss", "aa", "rs+sr", "ra+ar", "sa+as"]


# --------------------------------------------------------------------------------------------
# the counting, on one map


def token_layout(n_steps: int, modalities: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Modality id (0 goal, 1 state, 2 action) and timestep of each token of an interleaved window.

    ``modalities`` is the per-timestep token order, e.g. (0, 1, 2) for DT, (1, 2) for the DTd join.
    """
    per = len(modalities)
    mod = np.tile(np.asarray(modalities, dtype=np.int64), n_steps)  # (n*per,)
    step = np.repeat(np.arange(n_steps, dtype=np.int64), per)  # (n*per,)
    return mod, step


def same_step_forward_mask(mod: np.ndarray, step: np.ndarray) -> np.ndarray:
    """(L, L) bool: entries the recipe zeroes — same timestep, key modality after query modality."""
    return (step[:, None] == step[None, :]) & (mod[None, :] > mod[:, None])


def modality_scores(attn: np.ndarray, n_steps: int, modalities: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """The 3 x 3 matrix of attention mass from query modality (rows) to key modality (columns).

    attn: (L, L) head-averaged map over an interleaved window, L >= n_steps * len(modalities); only
    the first n_steps timesteps (the valid, right-padded prefix) are counted. Rows/columns of a
    modality absent from ``modalities`` stay zero. Flatten row-major for SCORE_NAMES order.
    """
    attn = np.asarray(attn, dtype=np.float64)
    n_tok = n_steps * len(modalities)
    if attn.ndim != 2 or attn.shape[0] < n_tok or attn.shape[1] < n_tok:
        raise DtdError(f"attention: map of shape {attn.shape} is smaller than {n_steps} steps x {len(modalities)} tokens")
    block = attn[:n_tok, :n_tok].copy()  # (L, L) valid part
    mod, step = token_layout(n_steps, modalities)
    block[same_step_forward_mask(mod, step)] = 0.0
    onehot = np.eye(3)[mod]  # (L, 3)
    return onehot.T @ block @ onehot  # (3, 3): sum over X-queries and Y-keys


def symmetric_scores(scores: np.ndarray) -> np.ndarray:
    """(..., 9) ordered scores -> (..., 6) in SYMMETRIC_NAMES order (rr, ss, aa, rs+sr, ra+ar, sa+as)."""
    s = np.asarray(scores).reshape(*np.shape(scores)[:-1], 3, 3)
    return np.stack(
        [s[..., 0, 0], s[..., 1, 1], s[..., 2, 2], s[..., 0, 1] + s[..., 1, 0],
         s[..., 0, 2] + s[..., 2, 0], s[..., 1, 2] + s[..., 2, 1]], axis=-1,
    )


def row_entropy(attn: np.ndarray, n_steps: int) -> tuple[float, float]:
    """Mean entropy (nats) of the valid query rows of a (K, K) causal cross-attention map.

    Also returns the entropy normalised by log(number of visible keys) (1 = uniform over the past
    goals, 0 = one goal token), over rows that see more than one key.
    """
    p = np.asarray(attn, dtype=np.float64)[:n_steps, :n_steps]
    h = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)  # (n,)
    visible = np.arange(1, n_steps + 1)
    norm = h[1:] / np.log(visible[1:]) if n_steps > 1 else np.array([])
    return float(h.mean()), float(norm.mean()) if norm.size else float("nan")


def reduce_layers(maps: dict[str, Any], prefix: str, layer: str = "last") -> np.ndarray:
    """Head-averaged (B, Lq, Lk) map of the layers named ``prefix{i}``: the last one, or their mean."""
    names = sorted((n for n in maps if n.startswith(prefix) and n[len(prefix):].isdigit()),
                   key=lambda n: int(n[len(prefix):]))
    if not names:
        raise DtdError(f"attention: the model returned no '{prefix}<i>' maps (got {sorted(maps)})")
    if layer == "last":
        chosen = names[-1:]
    elif layer == "mean":
        chosen = names
    else:
        raise DtdError(f"attention: --layer must be 'last' or 'mean', not {layer!r}")
    stack = np.stack([_np(maps[n]).mean(axis=1) for n in chosen])  # (layers, B, Lq, Lk)
    return stack.mean(axis=0)


def _np(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# a batch of windows through a model


@dataclass
class WindowScores:
    """Per-window results of one batch (or many, concatenated)."""

    scores: np.ndarray  # (N, 9) ordered scores, SCORE_NAMES order
    lengths: np.ndarray  # (N,) valid steps per window
    bias_entropy: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> (N, 2) nats, normalised
    modalities: tuple[int, ...] = (0, 1, 2)  # the token kinds present in the analysed map
    network: str = "transformer"  # DT's stack, or DTd's "join" network

    @staticmethod
    def concat(parts: list["WindowScores"]) -> "WindowScores":
        keys = parts[0].bias_entropy.keys()
        return WindowScores(
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.lengths for p in parts]),
            {k: np.concatenate([p.bias_entropy[k] for p in parts]) for k in keys},
            parts[0].modalities,
            parts[0].network,
        )


def score_windows(maps: dict[str, Any], lengths: np.ndarray, layer: str = "last") -> WindowScores:
    """Scores of each window from a model's attention dict (DT "layer{i}", DTd "join.{i}" + "bias.*").

    lengths: (B,) valid steps of each right-padded window. The token layout per timestep is read
    from the map size: 3 tokens (g, s, a) for DT and a join_all DTd, 2 (s, a) for the DTd join.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    prefix = "join." if any(n.startswith("join.") for n in maps) else "layer"
    avg = reduce_layers(maps, prefix, layer)  # (B, L, L)
    k = _context_len(maps, avg.shape[-1])
    per = avg.shape[-1] // k
    modalities = (0, 1, 2) if per == 3 else (1, 2)
    scores = np.stack([modality_scores(avg[b], int(n), modalities).reshape(9) for b, n in enumerate(lengths)])
    entropy = {}
    for name in sorted(n for n in maps if n.startswith("bias.")):
        bias = _np(maps[name]).mean(axis=1)  # (B, K, K) state/action queries over goal keys
        entropy[name.split(".", 1)[1]] = np.array([row_entropy(bias[b], int(n)) for b, n in enumerate(lengths)])
    return WindowScores(scores, lengths, entropy, modalities, "join" if prefix == "join." else "transformer")


def _context_len(maps: dict[str, Any], n_tok: int) -> int:
    """K: from a per-modality map (DTd encoders/bias are K x K), else DT's 3K tokens."""
    for name, t in maps.items():
        if name.startswith(("encoder.", "bias.")):
            return int(t.shape[-1])
    if n_tok % 3:
        raise DtdError(f"attention: a DT map of {n_tok} tokens is not 3 tokens per step")
    return n_tok // 3


def model_windows(model: Any, batch: dict[str, np.ndarray], layer: str = "last") -> WindowScores:
    """Run one sampler-style batch (states, actions, goals, timesteps, mask) and score its windows."""
    import torch

    device = next(model.parameters()).device
    t = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
    with torch.no_grad():
        out = model(t["states"].float(), t["actions"].float(), t["goals"].float(), t["timesteps"].long(),
                    t["mask"].float(), return_attention=True)
    if not out.attention:
        raise DtdError("attention: this model returns no attention maps (BC has none; use a DT or DTd run)")
    lengths = np.asarray(batch["mask"]).sum(-1).astype(np.int64)
    return score_windows(out.attention, lengths, layer)


# --------------------------------------------------------------------------------------------
# summary, files, figures


def summarize(ws: WindowScores, model_name: str = "", layer: str = "last", source: str = "") -> dict[str, Any]:
    """Means and standard errors of the 9 and 6 scores, the share matrix, and DTd's bias entropies."""
    n = len(ws.scores)
    sem = lambda x: (x.std(axis=0, ddof=1) / math.sqrt(n)) if n > 1 else np.full(x.shape[1], np.nan)  # noqa: E731
    sym = symmetric_scores(ws.scores)  # (N, 6)
    total = ws.scores.sum(-1, keepdims=True)  # (N, 1) attention mass counted per window
    share = ws.scores / np.clip(total, 1e-12, None)  # (N, 9) fractions of each window's mass
    out: dict[str, Any] = {
        "model": model_name, "layer": layer, "source": source, "windows": n,
        "network": ws.network, "tokens": [MODALITIES[m] for m in ws.modalities],
        "mean_length": float(ws.lengths.mean()) if n else float("nan"),
        "scores": {k: float(v) for k, v in zip(SCORE_NAMES, ws.scores.mean(0))},
        "scores_sem": {k: float(v) for k, v in zip(SCORE_NAMES, sem(ws.scores))},
        "symmetric": {k: float(v) for k, v in zip(SYMMETRIC_NAMES, sym.mean(0))},
        "symmetric_sem": {k: float(v) for k, v in zip(SYMMETRIC_NAMES, sem(sym))},
        "share": {k: float(v) for k, v in zip(SCORE_NAMES, share.mean(0))},
    }
    if ws.bias_entropy:
        out["bias_entropy"] = {
            k: {"nats": float(v[:, 0].mean()), "normalized": float(np.nanmean(v[:, 1]))}
            for k, v in ws.bias_entropy.items()
        }
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text table of a summary, for the terminal."""
    lines = [f"attention of {summary['model']} ({summary['layer']} layer, {summary['windows']} windows, "
             f"mean length {summary['mean_length']:.1f} steps)",
             f"{'score':>7} {'mean':>9} {'sem':>8} {'share':>7}"]
    for k in SCORE_NAMES:
        lines.append(f"{k:>7} {summary['scores'][k]:9.3f} {summary['scores_sem'][k]:8.3f} {summary['share'][k]:7.1%}")
    lines.append("symmetric: " + "  ".join(f"{k} {summary['symmetric'][k]:.3f}" for k in SYMMETRIC_NAMES))
    for k, v in summary.get("bias_entropy", {}).items():
        lines.append(f"bias.{k} cross-attention entropy: {v['nats']:.3f} nats ({v['normalized']:.2f} of uniform)")
    return "\n".join(lines)


def scores_csv(ws: WindowScores) -> str:
    """One row per window: its valid length and the 9 named scores."""
    rows = ["window,length," + ",".join(SCORE_NAMES)]
    for i, (n, s) in enumerate(zip(ws.lengths, ws.scores)):
        rows.append(f"{i},{int(n)}," + ",".join(f"{v:.6g}" for v in s))
    return "\n".join(rows) + "\n"


def plot_heatmaps(summaries: Sequence[dict[str, Any]], path: Path, titles: Sequence[str] | None = None) -> None:
    """One 3 x 3 heatmap per summary (share of attention, query rows -> key columns), side by side (atomic)."""
    fig = heatmap_figure(summaries, titles)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


def heatmap_figure(summaries: Sequence[dict[str, Any]], titles: Sequence[str] | None = None):
    """The matplotlib figure of plot_heatmaps (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = [np.array([s["share"][k] for k in SCORE_NAMES]).reshape(3, 3) for s in summaries]
    vmax = max(0.5, *(float(m.max()) for m in shares))  # one scale, so side-by-side maps compare
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.6 * len(summaries), 4.2), squeeze=False)
    for i, (ax, s, m) in enumerate(zip(axes[0], summaries, shares)):
        present = [t in s.get("tokens", MODALITIES) for t in MODALITIES]
        absent = ~np.outer(present, present)  # pairs with a modality the network has no token for
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")
        im = ax.imshow(np.ma.masked_where(absent, m), cmap=cmap, vmin=0.0, vmax=vmax)
        for r in range(3):
            for c in range(3):
                text = f"{m[r, c]:.1%}" if present[r] and present[c] else "n/a"
                dark = m[r, c] > 0.6 * vmax or absent[r, c]
                ax.text(c, r, text, ha="center", va="center", color="black" if dark else "white")
        ax.set_xticks(range(3), MODALITY_NAMES)
        ax.set_yticks(range(3), MODALITY_NAMES)
        ax.set_xlabel("key (attended)")
        ax.set_ylabel("query (attending)")
        title = titles[i] if titles else f"{s['model']} ({'join network' if s.get('network') == 'join' else s['layer'] + ' layer'})"
        for stream, e in s.get("bias_entropy", {}).items():
            title += f"\nbias.{stream} entropy {e['normalized']:.2f} of uniform"
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("share of attention mass by modality", fontsize=11)
    fig.tight_layout()
    return fig


WINDOW_BYTES = 9 * 8 + 8  # a window's 9 float64 scores and its length, kept until the summary

OUTPUT_FILES = {"csv": "attention_scores.csv", "summary": "attention_summary.json", "heatmap": "attention_heatmap.png"}


def check_outputs(out_dir: str | Path) -> dict[str, Path]:
    """The files write_outputs will write, checked before any work (see dtd.paths)."""
    out_dir = check_output_dir(out_dir, "attention --out")
    return {k: check_output_file(out_dir / name, "attention --out") for k, name in OUTPUT_FILES.items()}


def write_outputs(ws: WindowScores, summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """attention_scores.csv, attention_summary.json and attention_heatmap.png in out_dir, as one: a failure
    (a full disk) leaves none of them, not a CSV and JSON without their figure."""
    paths = check_outputs(out_dir)
    made = make_dirs(Path(out_dir))
    fig = heatmap_figure([summary])
    import matplotlib.pyplot as plt

    try:
        write_all_atomic({paths["csv"]: lambda tmp: Path(tmp).write_text(scores_csv(ws)),
                          paths["summary"]: lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"),
                          paths["heatmap"]: lambda tmp: fig.savefig(tmp, dpi=120)})
    except BaseException:
        remove_made(made)
        raise
    finally:
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------
# a run: windows from the dataset or from fresh episodes


def analyze_run(run_dir: str | Path, dataset: str | None = None, windows: int = 256, layer: str = "last",
                rollout: bool = False, seed: int = 0, batch_size: int = 64, progress: bool = True,
                device: str = "cpu") -> tuple[WindowScores, dict[str, Any]]:
    """Score ``windows`` windows of a trained run: sampled from ``dataset`` (default: the run's own) or,
    with ``rollout``, taken from fresh evaluation episodes driven by ``dtd.Policy``; the model runs on
    ``device`` (a resolved one, see dtd.device)."""
    if windows < 1:
        raise DtdError(f"attention: --windows must be >= 1, got {windows}")
    check_seed(seed, "attention: --seed")
    check_memory(windows * WINDOW_BYTES, "cpu", f"attention ({windows} windows)", "lower --windows")
    if layer not in ("last", "mean"):
        raise DtdError(f"attention: --layer must be 'last' or 'mean', not {layer!r}")
    model, info = load_run(run_dir)
    model = model.to(device)
    source = dataset or info.dataset
    if rollout:
        if not info.env_id:
            raise DtdError("attention: --rollout needs an environment; the run names none")
        goal_fn, target = goal_for_run(info)
        if target is None:
            raise DtdError("attention: --rollout needs a target return; the run's task has no default")
        policy = Policy(model, info.state_mean, info.state_std, goal_fn, target, context_len=info.context_len,
                        max_ep_len=info.max_ep_len, device=device)
        batches = _batched(_rollout_windows(policy, info.env_id, windows, seed), batch_size)
        where = f"rollouts of {info.env_id}"
    else:
        if not source:
            raise DtdError("attention: no dataset given and the run names none (use --dataset)")
        try:
            batches = _dataset_windows(source, info, windows, seed, batch_size)
        except DtdError as e:  # a relative path in the run's config is read from where it trained
            raise (e if dataset else DtdError(f"{e}; that is the run's own dataset: --dataset names another")) from None
        where = source
    parts = []
    with tqdm(total=windows, desc="attention windows", unit="win", disable=not progress, leave=False) as bar:
        for batch in batches:
            parts.append(model_windows(model, batch, layer))
            bar.update(len(batch["mask"]))
    ws = WindowScores.concat(parts)
    return ws, summarize(ws, info.model_name, layer, where)


def _dataset_windows(source: str, info: RunInfo, windows: int, seed: int, batch_size: int):
    critic = load_critic(info.config.critic) if info.goal == "iql" else None  # on the CPU, as before
    dataset = load_dataset(source)
    check_dataset_fits(info, dataset.obs_dim, dataset.act_dim, source)
    data = goals.with_goals(dataset, info.goal, info.state_mean, info.state_std, critic)
    sampler = SequenceSampler(
        data, context_len=info.context_len, reward_scale=info.reward_scale, delayed=info.config.delayed,
        max_ep_len=info.max_ep_len, seed=seed, state_mean=info.state_mean, state_std=info.state_std,
        goal="rtg" if info.goal == "rtg" else "episode",
    )
    return _sampled(sampler, windows, batch_size)  # the data is read here, the windows drawn as they are scored


def _sampled(sampler: SequenceSampler, windows: int, batch_size: int):
    left = windows
    while left > 0:
        n = min(batch_size, left)
        left -= n
        batch = sampler.sample(n)
        yield {k: batch[k] for k in ("states", "actions", "goals", "timesteps", "mask")}


def _batched(singles, batch_size: int):
    """Group (1, ...) windows into batches of up to batch_size, for one model call each."""
    group: list[dict] = []
    for w in singles:
        group.append(w)
        if len(group) == batch_size:
            yield {k: np.concatenate([g[k] for g in group]) for k in group[0]}
            group = []
    if group:
        yield {k: np.concatenate([g[k] for g in group]) for k in group[0]}


def _rollout_windows(policy: Any, env_id: str, windows: int, seed: int, stride: int = 5):
    """Windows every ``stride`` steps of seeded episodes (episode i: seed + i) until enough are taken."""
    env = make_env(env_id)
    low, high = env.action_space.low, env.action_space.high
    taken, episode = 0, 0
    try:
        while taken < windows:
            obs, _ = env.reset(seed=seed + episode)
            policy.reset()
            reward, done, t = 0.0, False, 0
            while not done and taken < windows:
                action = policy.act(obs, reward)
                if t % stride == 0:
                    taken += 1
                    yield policy.window()
                obs, reward, term, trunc, _ = env.step(np.clip(action, low, high))
                done, t = term or trunc, t + 1
            episode += 1
    finally:
        env.close()
