"""Does a model use its action history and its goal? Loss on a fixed batch with one input shuffled.

Each row's a_<t (or goal tokens) is swapped with another row's; if the loss barely moves, the model
ignores that input. a_t itself is never an input to its own prediction (causality), so shuffling the
action sequence changes only what the model could read: the history a_<t.
"""

from __future__ import annotations

import numpy as np
import torch

PROBE_BATCH = 256  # windows in the fixed probe batch
PROBE_SEED = 7_919  # its own stream: the training batches do not change when probing is on


def probe_batch(sampler, seed: int, device: str) -> dict[str, torch.Tensor]:
    """The fixed batch every probe of a run reads."""
    batch = sampler.sample(PROBE_BATCH, rng=np.random.default_rng([seed, PROBE_SEED]))
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


@torch.no_grad()
def shuffle_probe(model, batch: dict[str, torch.Tensor], loss_fn) -> dict[str, float]:
    """{loss, loss_shuffled_actions, loss_shuffled_goals} of the model in eval mode on ``batch``.

    Rows are rolled by one (row i reads row i-1's input), so every row gets another window's sequence;
    the padding mask and the targets stay with their own row.
    """
    was_training = model.training
    model.eval()
    try:
        s, a, g, t, m = (batch[k] for k in ("states", "actions", "goals", "timesteps", "mask"))
        perm = torch.roll(torch.arange(len(s), device=s.device), 1)
        out = {}
        for name, (aa, gg) in {"loss": (a, g), "loss_shuffled_actions": (a[perm], g),
                               "loss_shuffled_goals": (a, g[perm])}.items():
            out[name] = float(loss_fn(model(s, aa, gg, t, mask=m).actions.float(), a, m))
        return out
    finally:
        model.train(was_training)
