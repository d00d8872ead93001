"""What every sequence model shares: the output type, the batched ``act``, the causal block, init.

One causal transformer layer (``Block``) serves DT and DTd; ``CausalAttention`` is both its
self-attention and, given a ``context``, the causal cross-attention of DTd's BiasCombine.

Padding. Windows are RIGHT-padded: steps ``0..len-1`` are valid, the rest is padding. Under a
causal mask query ``i`` sees keys ``j <= i``, so a valid query never sees a padded key (every
padded key comes after every valid one, in each stream and in the interleaved join/DT order too).
A key-padding mask would therefore only change the outputs at padded positions, which nobody
reads (the loss is masked). The fast path thus calls SDPA with ``is_causal=True`` alone (exact for
all valid outputs, and lets SDPA use its fused kernels). The explicit path
(``return_attention=True``) also removes padded keys, except a query's own position so that a
padded row is never empty; valid rows get bit-for-bit the same allowed set as the fast path.

Query-only last layer. Only the outputs at state tokens are ever read (a_t is predicted there), so
the last layer (DTd's join, DT's last block) computes its queries, feed-forward and head only at
them (``blocks_at``): the K state tokens of each window in ``forward`` (training; the full layer runs
only when attention maps are asked for), one token per window in ``act`` (``forward(..., at=)``).
The other tokens still enter as keys and values: the same math, fewer products. ``act`` must be
batch-invariant, bit for bit: a window's action may not depend on how many other windows share
the call (batched evaluation must return exactly what one episode at a time does). fp32 GEMM
rounding of a row depends on the row count M (BLAS picks kernels and thread splits by M; on the
dev box, MKL/oneDNN, M < 4 with 1 thread and M < 12 with 2 differ from large M, multiples of 16
never), and CPU SDPA with a mask rounds differently by batch size with 2 threads. So the query
rows' products run padded to a multiple of ``ROW_MULTIPLE`` rows (``rowwise``), and the single
query's attention is spelled out (``attend``), which is invariant. The layers before it run on
M = N x K (or 2K, 3K) rows, large enough for evaluation's K = 20. On a GPU that is not enough: cuBLAS
picks kernels (and split reductions) by the whole shape, so on an H200 batched returns drifted from
one-at-a-time ones by up to 1.6e-4 (BENCHMARKS.md). There ``act`` runs every call at one fixed shape
(``fixed_shape_act``): CUDA_ACT_WINDOWS windows, padded or chunked, so a window meets the same kernels
whatever N is. Its per-call cost on a GPU is kernel launches, not rows, so the padding is nearly free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtd.errors import DtdError

ROW_MULTIPLE = 16  # rowwise pads to this many rows: every N then takes the same GEMM path
CUDA_ACT_WINDOWS = 128  # on a GPU, act runs every call on exactly this many windows (fixed_shape_act)


@dataclass
class ModelOutput:
    actions: Tensor  # (B, K, A) in [-1, 1]
    waypoints: Tensor | None = None  # (B, K, 2): DTd's auxiliary maze head
    attention: dict[str, Tensor] | None = None  # name -> (B, heads, Lq, Lk), on request only


class SequenceModel(nn.Module):
    """Base of DTd, DT and BC: the batched inference call and a few conveniences."""

    config: object  # the model's typed config dataclass; build_model(name, **asdict(config)) rebuilds it

    @torch.no_grad()
    def act(self, states: Tensor, actions: Tensor, goals: Tensor, timesteps: Tensor, lengths: Tensor) -> Tensor:
        """Actions for N environments at once, one forward over their right-padded windows.

        states (N,K,S), actions (N,K,A), goals (N,K,G), timesteps (N,K), lengths (N,) >= 1.
        Returns (N,A): the prediction at position lengths-1 of each window, i.e. exactly what
        ``forward`` gives there (the action slot at that position is never read: causality), to
        float rounding; bit-for-bit independent of N and of the other windows (module docstring).
        """
        lengths = lengths.to(device=states.device, dtype=torch.long)
        # nor on its memory layout: batched evaluation passes strided views of its history buffers, and MKL on
        # an Intel Xeon rounds a product of such a view differently from one of a contiguous copy
        states, actions, goals, timesteps = (x.contiguous() for x in (states, actions, goals, timesteps))
        if states.device.type == "cuda":
            return fixed_shape_act(self._act, CUDA_ACT_WINDOWS, states, actions, goals, timesteps, lengths)
        return self._act(states, actions, goals, timesteps, lengths)

    def _act(self, states: Tensor, actions: Tensor, goals: Tensor, timesteps: Tensor, lengths: Tensor) -> Tensor:
        k = states.shape[1]
        mask = (torch.arange(k, device=states.device)[None, :] < lengths[:, None]).float()  # (N,K)
        return self(states, actions, goals, timesteps, mask=mask, at=lengths - 1).actions[:, 0]  # (N,A)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def fixed_shape_act(act: Callable[..., Tensor], size: int, *windows: Tensor) -> Tensor:
    """``act(*windows)`` computed in calls of exactly ``size`` windows each: the N windows (every tensor's dim 0)
    are padded with copies of the first to a multiple of ``size`` and cut into chunks, so that every call has one
    shape whatever N is. -> (N, A)."""
    n = windows[0].shape[0]
    pad = -n % size
    if pad:
        windows = tuple(torch.cat([w, w[:1].expand(pad, *w.shape[1:])]) for w in windows)
    return torch.cat([act(*(w[i:i + size] for w in windows)) for i in range(0, n + pad, size)])[:n]


def take(x: Tensor, pos: Tensor) -> Tensor:
    """Tokens ``pos`` of each row: x (B, L, ...), pos (B,) or (B, Q) -> (B, 1 or Q, ...)."""
    pos = pos[:, None] if pos.dim() == 1 else pos
    return x[torch.arange(x.shape[0], device=x.device)[:, None], pos]


def rowwise(fn: Callable[[Tensor], Tensor], x: Tensor, invariant: bool = True) -> Tensor:
    """``fn(x)`` for a row-wise ``fn`` (linear layers, feed-forward, head); with ``invariant``, computed
    on x zero-padded to a multiple of ROW_MULTIPLE rows along dim 0 and sliced back, so that a row's
    result does not depend on how many rows there are (module docstring). x (B, ...) -> (B, ...)."""
    if not invariant:
        return fn(x)
    b = x.shape[0]
    pad = -b % ROW_MULTIPLE
    return fn(torch.cat([x, x.new_zeros(pad, *x.shape[1:])]) if pad else x)[:b]


def blocks_at(blocks: nn.ModuleList, x: Tensor, pos: Tensor, invariant: bool = False) -> Tensor:
    """What causal ``blocks`` output at tokens ``pos`` (B,) or (B, Q) of each row, x (B, L, H) -> (B, Q, H):
    every layer but the last runs on all tokens (they are the last one's keys), the last only on those.
    ``invariant``: batch-invariant products (``rowwise``), for ``act``."""
    for block in blocks[:-1]:
        x, _ = block(x)
    return blocks[-1].query(x, pos, invariant) if len(blocks) else take(x, pos)


def attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
    """Softmax attention spelled out: q (B, h, Lq, d), k/v (B, h, Lk, d), allowed broadcastable to
    (B, h, Lq, Lk) -> output (B, h, Lq, d), weights (B, h, Lq, Lk)."""
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return dropout_(weights, dropout) @ v, weights


def key_valid_from_mask(mask: Tensor | None, repeat: int = 1) -> Tensor | None:
    """(B,K) float mask -> (B, K*repeat) bool per token, for windows interleaved `repeat` tokens a step."""
    if mask is None:
        return None
    valid = mask.bool()
    return valid.repeat_interleave(repeat, dim=1) if repeat > 1 else valid


def keep_mask(x: Tensor, p: float) -> Tensor:
    """Dropout's keep multiplier for x on CPU: 0 with probability p, else 1/(1-p), iid per element.

    Each element reads 16 bits of a full-range int64 ``random_`` (4 elements per draw), against
    one 24-bit float per element for ``rand_like`` and more for ``bernoulli_``: torch's CPU generator
    is serial and was the largest non-matmul cost of a training step. p is rounded to a multiple
    of 2^-16 (0.1 -> 0.100006) and the scale follows it, so the layer stays unbiased.
    """
    drop = round(p * 65536)  # elements whose 16 bits (as int16) fall below -32768 + drop are dropped
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    u16 = bits.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    return u16.ge(drop - 32768).to(x.dtype).mul_(65536 / (65536 - drop))


def dropout_(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout: ``keep_mask`` on CPU, torch's fused dropout elsewhere."""
    drop = round(p * 65536)
    if drop == 0:
        return x
    if drop == 65536:
        return x * 0.0
    return x * keep_mask(x, p) if x.device.type == "cpu" else F.dropout(x, p, training=True)


class Dropout(nn.Module):
    """``nn.Dropout`` (iid keep mask, inverted scaling, no parameters: the same state-dict) whose CPU
    mask comes from ``keep_mask``, the cheapest CPU mask we measured (BENCHMARKS.md, "Design choices").
    Other devices use torch's fused dropout."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise DtdError(f"model config: dropout must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout_(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalAttention(nn.Module):
    """Multi-head causal attention: query i attends keys j <= i (the same step index in both).

    Self-attention by default; cross-attention when ``context`` (same length as x) is given:
    queries from x, keys/values from context.
    """

    def __init__(self, dim: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        if dim % n_head:
            raise DtdError(f"model config: hidden size {dim} is not divisible by {n_head} heads")
        self.n_head, self.dropout = n_head, dropout
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, context: Tensor | None = None, key_valid: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        ctx = x if context is None else context
        b, length, dim = x.shape
        heads = lambda t: t.view(b, length, self.n_head, dim // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q(x)), heads(self.k(ctx)), heads(self.v(ctx))  # (B, h, L, d)
        p = self.dropout if self.training else 0.0
        if not return_attention and (p == 0.0 or x.device.type != "cpu"):
            y, weights = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
        else:  # the same math spelled out: for the weights, or for CPU training (SDPA would take its
            # unfused math path there anyway, with the costlier bernoulli_ mask)
            allowed = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()  # (L, L)
            if key_valid is not None:  # drop padded keys, but keep each query's own position
                eye = torch.eye(length, dtype=torch.bool, device=x.device)
                allowed = allowed & (key_valid[:, None, None, :] | eye)  # (B, 1, L, L)
            y, weights = attend(q, k, v, allowed, p)  # weights (B, h, L, L)
            weights = weights if return_attention else None
        y = y.transpose(1, 2).reshape(b, length, dim)  # (B, L, H)
        return self.proj(y), weights

    def query(self, x: Tensor, pos: Tensor, invariant: bool = False) -> Tensor:
        """Self-attention output at tokens ``pos`` (B,) or (B, Q) only, x (B, L, H) -> (B, Q, H).
        ``attend`` on contiguous heads is batch-invariant (masked SDPA is not with 2 threads, strided
        multi-head bmm not even with 1); ``invariant`` pads the products' rows too (``rowwise``)."""
        b, length, dim = x.shape
        pos = pos[:, None] if pos.dim() == 1 else pos  # (B, Q)
        heads = lambda t: t.view(b, t.shape[1], self.n_head, -1).transpose(1, 2).contiguous()  # noqa: E731
        q, k, v = heads(rowwise(self.q, take(x, pos), invariant)), heads(self.k(x)), heads(self.v(x))  # (B,h,Q|L,d)
        allowed = torch.arange(length, device=x.device) <= pos[..., None]  # (B, Q, L): keys j <= pos
        y, _ = attend(q, k, v, allowed[:, None], self.dropout if self.training else 0.0)  # (B, h, Q, d)
        return rowwise(self.proj, y.transpose(1, 2).reshape(b, pos.shape[1], dim), invariant)



class Block(nn.Module):
    """One causal transformer layer: attention then feed-forward, each residual, pre- or post-norm.

    Mirrors the usual encoder layer (dropout on attention weights, after attention, inside and
    after the feed-forward) so DT and DTd are built from the same piece.
    """

    def __init__(
        self, dim: int, n_head: int, ff_dim: int, dropout: float = 0.1, norm_first: bool = True, activation: str = "relu"
    ):
        super().__init__()
        acts = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in acts:
            raise DtdError(f"model config: activation must be one of {', '.join(acts)}, got {activation!r}")
        self.norm_first = norm_first
        self.attn = CausalAttention(dim, n_head, dropout)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), acts[activation](), Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop1, self.drop2 = Dropout(dropout), Dropout(dropout)

    def forward(
        self, x: Tensor, context: Tensor | None = None, key_valid: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        # x (B, L, H) -> (B, L, H); weights (B, h, L, L) or None
        if self.norm_first:
            a, w = self.attn(self.ln1(x), context, key_valid, return_attention)
            x = x + self.drop1(a)
            x = x + self.drop2(self.ff(self.ln2(x)))
        else:
            a, w = self.attn(x, context, key_valid, return_attention)
            x = self.ln1(x + self.drop1(a))
            x = self.ln2(x + self.drop2(self.ff(x)))
        return x, w

    def query(self, x: Tensor, pos: Tensor, invariant: bool = False) -> Tensor:
        """This layer's output at tokens ``pos`` (B,) or (B, Q) only, x (B, L, H) -> (B, Q, H) (``blocks_at``)."""
        if self.norm_first:
            y = take(x, pos) + self.drop1(self.attn.query(self.ln1(x), pos, invariant))
            return y + self.drop2(rowwise(lambda t: self.ff(self.ln2(t)), y, invariant))
        y = self.ln1(take(x, pos) + self.drop1(self.attn.query(x, pos, invariant)))
        return self.ln2(y + self.drop2(rowwise(self.ff, y, invariant)))


def init_weights(module: nn.Module, scheme: str = "xavier") -> None:
    """Initialise every weight matrix (linear layers and embedding tables) and bias.

    "authors": the DTd authors' code: Xavier-normal on every matrix, where their attention holds q, k
    and v as one packed 3H x H matrix, so each of our q/k/v gets that matrix's smaller std
    sqrt(2 / (H + 3H)); biases as PyTorch initialises them (linear layers U(+-1/sqrt(fan_in)),
    attention projections 0, as ``nn.MultiheadAttention`` sets them).
    "xavier" (dtd 0.1's DTd): Xavier-normal on each matrix, q/k/v separately, all biases zero.
    "gpt2" (the original DT): N(0, 0.02) on each matrix, all biases zero.
    LayerNorms keep their ones and zeros.
    """
    for name, p in module.named_parameters():
        if isinstance(_owner(module, name), nn.LayerNorm):
            continue
        if p.dim() >= 2:
            nn.init.normal_(p, 0.0, 0.02) if scheme == "gpt2" else nn.init.xavier_normal_(p)
        elif name.endswith("bias") and scheme != "authors":
            nn.init.zeros_(p)
    if scheme == "authors":
        for attn in (m for m in module.modules() if isinstance(m, CausalAttention)):
            for linear in (attn.q, attn.k, attn.v):
                fan_out, fan_in = linear.weight.shape
                nn.init.normal_(linear.weight, 0.0, math.sqrt(2.0 / (fan_in + 3 * fan_out)))
            for linear in (attn.q, attn.k, attn.v, attn.proj):
                nn.init.zeros_(linear.bias)


def _owner(root: nn.Module, param_name: str) -> nn.Module:
    return root.get_submodule(param_name.rpartition(".")[0]) if "." in param_name else root
