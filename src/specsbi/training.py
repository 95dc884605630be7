"""The one training loop every model in specsbi uses: short, visible, resumable.

Validation split, early stopping on the validation loss, gradient clipping,
skipping (and counting) non-finite batches, a progress bar, checkpoints that
resume an interrupted fit, and seeds.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .files import atomic_path

__all__ = ["History", "TrainConfig", "split", "train"]

log = logging.getLogger(__name__)

#: ``loss_fn(model, batch, generator) -> per-sample losses (B,)``
LossFn = Callable[[nn.Module, Sequence[Tensor], torch.Generator], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train`; every field has a working default.

    The learning rate is multiplied by ``lr_decay`` each time the validation loss
    has not improved for ``patience // 3`` epochs; training stops after
    ``patience`` epochs without improvement.
    """

    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 300
    patience: int = 20
    val_fraction: float = 0.1
    clip_norm: float = 5.0
    min_epochs: int = 1
    lr_decay: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "max_epochs": self.max_epochs >= 1,
            "patience": self.patience >= 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "clip_norm": self.clip_norm > 0,
            "min_epochs": self.min_epochs >= 1,
            "lr_decay": 0 < self.lr_decay <= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            given = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"invalid training settings: {given}")


@dataclass
class History:
    """What happened during :func:`train`."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    skipped_batches: int = 0
    best_epoch: int = -1
    best_val_loss: float = math.inf
    seconds: float = 0.0
    stopped_early: bool = False
    temperature: list[float] | None = None  # set by a posterior's calibration, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The figures a model card keeps."""
        return {"best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                "epochs": len(self.val_loss), "skipped_batches": self.skipped_batches,
                "seconds": self.seconds,
                **({"temperature": self.temperature} if self.temperature else {})}


def split(n: int, config: TrainConfig, gen: torch.Generator | int) -> tuple[Tensor, Tensor]:
    """The validation and training rows :func:`train` uses (given its seed or generator)."""
    if isinstance(gen, int):
        gen = torch.Generator(device="cpu").manual_seed(gen)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(config.val_fraction * n)))
    return perm[:n_val], perm[n_val:]


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: Sequence[Tensor],
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    params: Sequence[nn.Parameter] | None = None,
) -> History:
    """Minimise the mean of ``loss_fn`` over ``data``; leave ``model`` at its best validation loss.

    Args:
        model: the module to train (already on its device, as ``data`` is).
        loss_fn: ``(model, batch, generator) -> (B,)`` per-sample losses; the
            generator gives fresh randomness (e.g. noise) per batch, reproducibly.
        data: tensors with a common first dimension, split into training and
            validation rows by ``seed``.
        config: batch size, learning rate, early stopping, clipping.
        seed: seeds the split, the shuffling and the generator.
        progress: show a progress bar over epochs.
        checkpoint: file to save after every epoch; if it exists, training resumes
            from it (the same data, config and seed give the same result; a checkpoint
            of other data sizes, settings or networks is refused; ``max_epochs`` may
            differ, to train on).
        params: parameters to optimise (default: all of ``model``'s).

    Returns:
        The :class:`History`; non-finite batches are skipped and counted.

    Example:
        >>> net = nn.Linear(1, 1)
        >>> x = torch.linspace(-1, 1, 200)[:, None]
        >>> loss = lambda m, b, g: (m(b[0]) - 3 * b[0]).pow(2).sum(-1)
        >>> h = train(net, loss, [x], TrainConfig(max_epochs=200, lr=0.05), progress=False)
        >>> round(float(net.weight), 2)
        3.0
    """
    from tqdm.auto import tqdm

    n = len(data[0])
    if n < 2:
        raise ValueError(f"training needs at least 2 examples; got {n}")
    if any(len(t) != n for t in data):
        raise ValueError(f"all training tensors need {n} rows; got {[len(t) for t in data]}")
    device = data[0].device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    val_idx, train_idx = split(n, config, gen)
    params = list(model.parameters()) if params is None else list(params)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    hist, best_state, bad_epochs, start = History(), copy.deepcopy(model.state_dict()), 0, 0
    path = Path(checkpoint) if checkpoint is not None else None
    settings = {k: v for k, v in asdict(config).items() if k != "max_epochs"}  # may grow
    fingerprint = {"rows": n, "config": settings, "seed": seed,
                   "parameters": [list(p.shape) for p in params]}
    if path is not None and path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("fingerprint", fingerprint) != fingerprint:
            raise ValueError(f"the checkpoint {path} is of a fit with other data, settings or "
                             "networks; delete it to start afresh, or rerun with the same ones")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best_state, bad_epochs, start = state["best"], state["bad_epochs"], state["epoch"]
        gen.set_state(state["generator"])
        hist = History(**state["history"])
        log.info("resuming training from %s at epoch %d", path, start)
    t0 = time.perf_counter() - hist.seconds
    bar = tqdm(range(start, config.max_epochs), disable=not progress, desc="train", unit="epoch")
    for epoch in bar:
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        total, count = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size].to(device)
            loss = loss_fn(model, [t[idx] for t in data], gen).mean()
            if not torch.isfinite(loss):
                hist.skipped_batches += 1
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, config.clip_norm)
            if not torch.isfinite(norm):
                hist.skipped_batches += 1
                continue
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        val = _evaluate(model, loss_fn, data, val_idx.to(device), config.batch_size, seed)
        hist.train_loss.append(total / max(count, 1))
        hist.val_loss.append(val)
        if val < hist.best_val_loss:
            hist.best_val_loss, hist.best_epoch, bad_epochs = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs % max(1, config.patience // 3) == 0:  # plateau: smaller steps
                for group in opt.param_groups:
                    group["lr"] *= config.lr_decay
        bar.set_postfix(train=f"{hist.train_loss[-1]:.3f}", val=f"{val:.3f}",
                        best=f"{hist.best_val_loss:.3f}")
        hist.seconds = time.perf_counter() - t0
        if not progress:  # a log file still shows how far a long fit has come
            log.info("epoch %d: train %.4f, validation %.4f (best %.4f), %.0f s", epoch + 1,
                     hist.train_loss[-1], val, hist.best_val_loss, hist.seconds)
        stop = bad_epochs >= config.patience and epoch + 1 >= config.min_epochs
        if path is not None:
            _save_checkpoint(path, model, opt, best_state, bad_epochs, epoch + 1, gen, hist,
                             fingerprint)
        if stop:
            hist.stopped_early = True
            break
    if hist.skipped_batches:
        log.warning("skipped %d non-finite batches during training", hist.skipped_batches)
    if not math.isfinite(hist.best_val_loss):
        raise RuntimeError("training diverged: the validation loss was never finite")
    model.load_state_dict(best_state)
    model.eval()
    return hist


@torch.no_grad()
def _evaluate(model, loss_fn, data, idx, batch_size, seed) -> float:
    """Mean validation loss, with its own fixed generator so epochs compare fairly."""
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    losses = []
    for i in range(0, len(idx), batch_size):
        batch = idx[i : i + batch_size]
        losses.append(loss_fn(model, [t[batch] for t in data], gen))
    loss = torch.cat(losses)
    finite = torch.isfinite(loss)
    return float(loss[finite].mean()) if finite.all() else math.inf


def _save_checkpoint(path, model, opt, best, bad_epochs, epoch, gen, hist, fingerprint) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "best": best,
        "bad_epochs": bad_epochs,
        "epoch": epoch,
        "generator": gen.get_state(),
        "history": hist.to_dict(),
    }
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)
