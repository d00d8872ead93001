"""DDP on CPU: two gloo processes train a few steps, each sampling its own batches (seed + rank);
afterwards the weights are identical on both ranks and only rank 0 wrote the run folder."""

import os
import pickle

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    # what torchrun sets, its agent hosting the rendezvous store
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)
    from dtd.config import TrainConfig
    from dtd.training.trainer import train

    cfg = TrainConfig(dataset=data, context_len=5, max_ep_len=64, batch_size=4,
                      model_options=dict(hidden_size=16, n_layer=1, ff_dim=16, join_ff_dim=16), steps=6, warmup_steps=2, log_every=3,
                      ckpt_every=3, eval_episodes=0, device="cpu", out_dir=out, run_name="ddp", max_minutes=0)
    result = train(cfg, progress=False)
    torch.save({"model": result.model.state_dict(), "is_main": result.is_main}, os.path.join(out, f"rank{rank}.pt"))


def test_two_ranks_end_with_identical_weights(tmp_path):
    rng = np.random.default_rng(0)
    trajs = [{"observations": rng.normal(size=(n, 11)).astype(np.float32),
              "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
              "rewards": rng.random(n).astype(np.float32), "terminals": np.eye(n, dtype=bool)[-1]}
             for n in (20, 30, 25)]
    data = tmp_path / "hopper-tiny.pkl"
    data.write_bytes(pickle.dumps(trajs))
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # torchrun's agent store
    mp.spawn(_worker, args=(2, store.port, str(data), str(tmp_path)), nprocs=2, join=True)

    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["is_main"] and not r1["is_main"]
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 6 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    # each rank drew its own batches: the two samplers' RNG states differ
    assert ckpt["rng_ranks"][0]["sampler"] != ckpt["rng_ranks"][1]["sampler"]
    for k, v in r0["model"].items():
        assert torch.equal(v, ckpt["model"][k])
