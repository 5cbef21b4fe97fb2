"""An exponential moving average (EMA) of the weights, kept beside training: a Lightning callback.

``ExponentialMovingAverage`` keeps a float32 shadow copy of every parameter on the parameters'
device and, after every optimizer step, moves it towards the trained ("raw") weights:

    shadow = d * shadow + (1 - d) * weights,   d = min(decay, (1 + n) / (10 + n))

with n the updates made so far. The warm-up term lets the first updates follow the weights
closely (an average with the random initialisation would be useless) and widens the average
as training goes on. One fused ``torch._foreach_lerp_`` does the update: no host read, no
collective, no Python loop over the parameters.

- Buffers are not averaged but used as they are: the feature normaliser's running mean and
  variance are averages of the data already (averaging them again would only make them lag
  behind), and its batch count is an integer.
- A step the non-finite guard skipped (``rnnt.optim``, decided on the device) left the weights
  where they were; the update then only pulls the shadow one step closer to them, as a step
  that changed nothing would. Telling the two apart would cost a host read per step.
- Validation and testing run on the EMA weights: swapped into the parameters at their start,
  the raw weights swapped back at their end (mid-epoch validations too). Training always goes
  on from the raw weights.
- Checkpoints (``store``, from the module's ``on_save_checkpoint``, so every save of the
  trainer: best-k, ``last.ckpt``, on a stop signal, weights-only): ``state_dict`` holds the EMA
  weights with the current buffers, which every consumer reads by default (``rnnt transcribe``,
  ``rnnt export``, ``rnnt average``, ``rnnt validate|test --ckpt_path``, ``--model.init_from``);
  ``raw_state_dict`` the raw ones; ``weights`` says ``"ema"``; ``ema`` holds the decay and the
  update count (``rnnt.checkpoint.select_state_dict`` picks either). Resuming ``fit`` trains on
  the raw weights (``use_raw_weights``, from the module's ``on_load_checkpoint``, before
  Lightning loads ``state_dict``) and continues the shadow and the count exactly.
- DDP: every rank holds the same weights after every step, and builds its shadow from the same
  weights (after DDP's first broadcast) or the same checkpoint: one EMA, nothing exchanged.

``TransducerModule`` makes one where ``--model.ema_decay`` is above 0 and hands it to Lightning
from its ``configure_callbacks`` hook.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from rnnt.checkpoint import RAW_STATE_DICT_KEY, WEIGHTS_KEY, stored_weights
from rnnt.constants import EMA_DECAY, EMA_WARMUP_OFFSET, EMA_WEIGHTS, RAW_WEIGHTS

__all__ = [
    "EMA_STATE_KEY",
    "RESUMED_EMA_KEY",
    "ExponentialMovingAverage",
    "ema_decay_at",
    "use_raw_weights",
]

EMA_STATE_KEY = "ema"  # {"decay": float, "updates": int} in a checkpoint of a run with an EMA
RESUMED_EMA_KEY = "ema_state_dict"  # where use_raw_weights puts the EMA weights for the callback


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of the update that follows ``updates`` earlier ones:
    ``min(decay, (1 + n) / (10 + n))`` (``EMA_WARMUP_OFFSET`` is the 10)."""
    return min(decay, (1 + updates) / (EMA_WARMUP_OFFSET + updates))


def use_raw_weights(checkpoint: dict[str, Any]) -> None:
    """Ready a checkpoint for resuming training: the raw weights into ``state_dict`` (what
    Lightning loads into the model), the EMA weights to ``RESUMED_EMA_KEY`` (what the callback
    continues from). A checkpoint without both is left as it is."""
    if stored_weights(checkpoint) != EMA_WEIGHTS or RAW_STATE_DICT_KEY not in checkpoint:
        return
    checkpoint[RESUMED_EMA_KEY] = checkpoint["state_dict"]
    checkpoint["state_dict"] = checkpoint.pop(RAW_STATE_DICT_KEY)
    checkpoint[WEIGHTS_KEY] = RAW_WEIGHTS


class ExponentialMovingAverage(pl.Callback):
    """The EMA of a module's parameters during ``fit``, used to validate, test and save.

    Args:
        decay: the long-run decay per optimizer step, in (0, 1); 0.999 averages over about
            the last 1000 steps once the warm-up is over (see ``ema_decay_at``).
    """

    def __init__(self, decay: float = EMA_DECAY) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay} must be in (0, 1)")
        self.decay = decay
        self.updates = 0
        self._names: list[str] = []
        self._params: list[torch.Tensor] = []  # the parameters' tensors, detached
        self._float32 = True  # every parameter is float32: lerp from them directly
        self._shadow: list[torch.Tensor] | None = None  # float32, on the parameters' devices
        self._loaded: dict[str, torch.Tensor] | None = None  # EMA weights of a resumed run
        self._raw: list[torch.Tensor] | None = None  # raw weights while the EMA ones are in
        self._hooks: list[Any] = []

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The EMA weights by parameter name (empty until training or its validation starts)."""
        return dict(zip(self._names, self._shadow or [], strict=False))

    # --- the average --------------------------------------------------------------------
    def attach(self, module: nn.Module) -> None:
        """Build the shadow of ``module``'s parameters: the EMA weights of a resumed checkpoint
        where there are some, else a float32 copy of the parameters. The callback calls it
        when training (or its first validation) starts: after Lightning has restored the
        checkpoint, moved the model to its device and wrapped it for DDP."""
        named = list(module.named_parameters())
        self._names = [name for name, _ in named]
        self._params = [parameter.detach() for _, parameter in named]
        self._float32 = all(p.dtype == torch.float32 for p in self._params)
        loaded, self._loaded = self._loaded or {}, None
        self._raw = None
        self._shadow = [
            loaded.get(name, parameter).detach().to(parameter.device, torch.float32, copy=True)
            for name, parameter in zip(self._names, self._params, strict=True)
        ]

    def update(self) -> None:
        """Move the shadow one step towards the current weights (after an optimizer step)."""
        weight = 1.0 - ema_decay_at(self.decay, self.updates)
        sources = self._params if self._float32 else [p.float() for p in self._params]
        with torch.no_grad():
            torch._foreach_lerp_(self._shadow, sources, weight)
        self.updates += 1

    def swap_in(self) -> None:
        """Put the EMA weights into the parameters, keeping the raw ones aside (no-op without
        a shadow, or when they are in already)."""
        if self._shadow is None or self._raw is not None:
            return
        with torch.no_grad():
            self._raw = [parameter.clone() for parameter in self._params]
            torch._foreach_copy_(self._params, self._shadow)

    def swap_out(self) -> None:
        """Put the raw weights back (no-op when they are in)."""
        if self._raw is None:
            return
        with torch.no_grad():
            torch._foreach_copy_(self._params, self._raw)
        self._raw = None

    # --- checkpoints --------------------------------------------------------------------
    def store(self, checkpoint: dict[str, Any]) -> None:
        """Put the EMA into a checkpoint being saved (see the module's docstring); nothing
        before there is a shadow."""
        if self._shadow is None:
            return
        state = checkpoint["state_dict"]
        raw = dict(state)
        if self._raw is not None:  # saved during a validation (a stop signal): EMA weights in
            raw.update(zip(self._names, self._raw, strict=True))
        checkpoint[RAW_STATE_DICT_KEY] = raw
        checkpoint["state_dict"] = {**state, **dict(zip(self._names, self._shadow, strict=True))}
        checkpoint[WEIGHTS_KEY] = EMA_WEIGHTS
        checkpoint[EMA_STATE_KEY] = {"decay": self.decay, "updates": self.updates}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # After the module's on_load_checkpoint (use_raw_weights) and Lightning's loading of
        # state_dict. Evaluating a checkpoint uses the weights its state_dict holds: no shadow.
        self._shadow, self._raw = None, None
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._loaded = checkpoint.get(RESUMED_EMA_KEY) if fitting else None
        self.updates = 0
        if self._loaded is not None:
            self.updates = int(checkpoint.get(EMA_STATE_KEY, {}).get("updates", 0))

    # --- when -------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._shadow is None:
            self.attach(pl_module)
        self._remove_hooks()
        # Right after each optimizer.step(): before any callback's on_train_batch_end (a save
        # there sees this step's average) and once per step under gradient accumulation.
        for optimizer in trainer.optimizers:
            self._hooks.append(optimizer.register_step_post_hook(self._after_step))

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.update()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._shadow is None and trainer.state.fn == TrainerFn.FITTING:
            self.attach(pl_module)  # the sanity check comes before on_train_start
        self.swap_in()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.swap_out()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.swap_in()  # after a fit in this process; a checkpoint's test has no shadow

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.swap_out()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.swap_out()
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
