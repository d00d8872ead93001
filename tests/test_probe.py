"""The shuffled-input probe (`--probe_steps`): logged at the asked steps, and it leaves training untouched."""

from __future__ import annotations

import json

import torch

from dtd.config import TrainConfig
from dtd.training.probe import shuffle_probe
from dtd.training.trainer import masked_mse, train


def _run(tmp_path, name: str, probe_steps: list[int]) -> list[dict]:
    threads = torch.get_num_threads()
    cfg = TrainConfig(model="dtd", steps=6, batch_size=8, context_len=4, log_every=1, eval_episodes=0,
                      eval_untrained=False, ckpt_every=0, max_minutes=0, threads=1, seed=0, out_dir=str(tmp_path),
                      run_name=name, probe_steps=probe_steps,
                      model_options={"hidden_size": 16, "n_layer": 1, "ff_dim": 32, "join_ff_dim": 32})
    try:
        run = train(cfg, progress=False).run_dir
    finally:
        torch.set_num_threads(threads)
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_probe_is_logged_at_its_steps_and_does_not_change_training(tmp_path):
    plain = _run(tmp_path, "plain", [])
    probed = _run(tmp_path, "probed", [2, 6])
    assert [r["loss"] for r in probed if "loss" in r] == [r["loss"] for r in plain if "loss" in r]
    probes = {r["step"]: r["probe"] for r in probed if "probe" in r}
    assert sorted(probes) == [2, 6] and not any("probe" in r for r in plain)
    for p in probes.values():
        assert set(p) == {"loss", "loss_shuffled_actions", "loss_shuffled_goals"}
        assert p["loss_shuffled_actions"] != p["loss"] and p["loss_shuffled_goals"] != p["loss"]


def test_shuffle_probe_rolls_inputs_but_keeps_targets():
    class Echo(torch.nn.Module):  # predicts its goal token as the action: only a goal shuffle moves its loss
        def forward(self, s, a, g, t, mask=None):
            return type("Out", (), {"actions": g.expand_as(a)})()

    b, k = 5, 3
    batch = {"states": torch.zeros(b, k, 2), "actions": torch.arange(b).float().view(b, 1, 1).expand(b, k, 1).clone(),
             "goals": torch.arange(b).float().view(b, 1, 1).expand(b, k, 1).clone(),
             "timesteps": torch.zeros(b, k, dtype=torch.long), "mask": torch.ones(b, k)}
    out = shuffle_probe(Echo(), batch, masked_mse)
    assert out["loss"] == 0.0 and out["loss_shuffled_actions"] == 0.0
    assert out["loss_shuffled_goals"] > 0.0  # each row reads another row's goal
