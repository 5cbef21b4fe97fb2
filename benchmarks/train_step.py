"""Speed and peak memory of one training step of each model preset: the fused loss against
torchaudio's loss on full joiner logits, side by side in one run.

A step is what ``rnnt fit`` runs per batch: ``Transducer.forward`` (log-mel, SpecAugment,
Conformer encoder, prediction network, RNN-T loss plus CTC_WEIGHT x the auxiliary CTC loss)
under the training precision (``--precision``: PRECISION_GPU, bf16 autocast, on CUDA;
PRECISION_CPU on the CPU), backward, gradient clipping to GRADIENT_CLIP_VAL and an AdamW step,
with the parts ``TransducerModule`` uses (``rnnt.optim``: ``adamw``, fused where the device has
the kernel; ``clip_gradients``; ``NonFiniteGuard`` deciding on the device) and TF32 float32
matmuls on GPUs that have them (``rnnt.lightning_cli.use_tensor_cores``). Methods:

- ``fused``: ``Transducer.forward`` as ``TransducerModule`` calls it, with the lengths also on
  the host and ``validate=False`` (``rnnt.loss.fused_rnnt_loss``);
- ``torchaudio``: the same objective from the same layers: the joiner's full (B, T', U+1, V)
  logits (in the autocast dtype, then float32) and ``torchaudio.functional.rnnt_loss``, plus
  the same CTC term; only where torchaudio imports (``pip install torchaudio``).

The batch is one bucket of a duration-bucketed sampler: utterances of ``--utterance-seconds``
(the longest) down to 1/BUCKET_MAX_EDGE_RATIO of it, drawn until ``--batch-seconds`` of audio
are filled (at most BATCH_SIZE utterances); noise waveforms (the content does not change the
cost), ``--tokens-per-second`` random token ids per second of audio. The default rate, 4.1,
is the demo corpus's with a 256-piece unigram tokenizer (VOCAB_SIZE): its 2 h of training
speech hold 2.72 words/s (13.6 characters/s), 1.52 pieces a word. A 1024-piece vocabulary cuts
fewer pieces a word (the demo's text is too small to train one), so 4.1 overstates U there,
which makes the loss's share pessimistic.

Figures per preset and method:

- ``step_s``: median wall time of ``--repeats`` steps after one warm-up step, the methods
  interleaved so that drift in a shared machine's speed hits them alike; CUDA synchronised
  around each step. ``audio_s_per_s``: the batch's seconds of audio over ``step_s``.
- ``loss_s``: median forward + backward of the joiner and the RNN-T loss alone (for ``fused``
  ``fused_rnnt_loss`` on the joiner's projections, for ``torchaudio`` full logits and its
  loss), on the batch's encoder and prediction-network outputs detached as leaves, timed apart
  with CUDA synchronised around; ``loss_share`` = ``loss_s / step_s``.
- ``peak_mb``: on CUDA ``torch.cuda.max_memory_allocated`` during one step above what is held
  between steps (``resting_mb``: weights, AdamW state, the batch); on the CPU the growth of
  the peak resident set size (VmHWM, reset through /proc/self/clear_refs) over one step above
  the RSS before it, in a fresh subprocess per preset and method after a tiny warm-up step
  (which pages in kernels and thread pools and creates the AdamW state).
- ``step_ops``, ``optimizer_ops`` and ``loss_ops``: dispatched kernels and host reads
  (``rnnt.op_counts``) of one forward + backward + clipping, of the AdamW step and of the loss
  part; on a GPU each kernel is a launch and each host read a sync.
- ``first_loss``: the objective before the first step, with the same seed for both methods (same
  dropout and SpecAugment masks): equal to float tolerance, so both methods do the same work.

The 1-minute load average before and after is reported: on a busy machine torch's threads
wait for each other far beyond their share of the cores (a step of tiny measured 0.3 s with
one thread and 3-20 s with two at a load of 8 on 2 cores); there, pass ``--threads 1``.

    python benchmarks/train_step.py --json
    python benchmarks/train_step.py --device cuda --presets large --vocab 1024 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from rnnt.constants import (
    ADAM_BETAS,
    BATCH_SIZE,
    BUCKET_MAX_EDGE_RATIO,
    GRADIENT_CLIP_VAL,
    LEARNING_RATE,
    MAX_BATCH_DURATION,
    MAX_NONFINITE_STEPS,
    PRECISION_CPU,
    PRECISION_GPU,
    SAMPLE_RATE,
    SEED,
    VOCAB_SIZE,
    WEIGHT_DECAY,
)
from rnnt.lightning_cli import use_tensor_cores
from rnnt.loss import fused_rnnt_loss
from rnnt.models.transducer import PRESETS, Transducer, config_from_preset
from rnnt.op_counts import count_ops
from rnnt.optim import NonFiniteGuard, adamw, clip_gradients, is_fused

METHODS = ("fused", "torchaudio")
PRESETS_CPU = ("tiny", "small")  # medium and large: too slow for a default run on 2 cores
PRESETS_CUDA = tuple(PRESETS)
BATCH_SECONDS_CPU = 60.0  # the demo's CPU batch (DEMO_MAX_BATCH_DURATION)
BATCH_SECONDS_CUDA = MAX_BATCH_DURATION
UTTERANCE_SECONDS_CPU = 6.0  # 10 utterances of 5.5-6 s in the 60 s batch
UTTERANCE_SECONDS_CUDA = 15.0  # the lattice-size example of rnnt/constants.py
TOKENS_PER_SECOND = 4.1  # the demo corpus with a 256-piece unigram tokenizer (docstring)
REPEATS_CPU = 3
REPEATS_CUDA = 10
LOSS_SHARE_TARGET = 0.2  # issue 12: the loss under 20 % of a large bf16 step on a GPU
WARMUP_SECONDS = 1.0  # the CPU memory worker's tiny warm-up batch: 2 utterances this long
NOISE_SCALE = 0.1


def make_batch(args: argparse.Namespace, num_classes: int, device: torch.device) -> dict:
    """One duration bucket: ``audio (B, S)``, ``audio_lengths (B,)``, ``targets (B, U)``,
    ``target_lengths (B,)`` on ``device`` and the lengths as lists (``host_audio_lengths``,
    ``host_target_lengths``), as the data loader gives them; the first utterance is the
    longest."""
    gen = torch.Generator().manual_seed(args.seed)
    longest = args.utterance_seconds
    durations = [longest]
    while len(durations) < BATCH_SIZE:
        shortest = longest / BUCKET_MAX_EDGE_RATIO
        seconds = shortest + (longest - shortest) * float(torch.rand((), generator=gen))
        if sum(durations) + seconds > args.batch_seconds:
            break
        durations.append(seconds)
    audio_lengths = torch.tensor([round(s * SAMPLE_RATE) for s in durations])
    target_lengths = torch.tensor([max(1, round(args.tokens_per_second * s)) for s in durations])
    audio = torch.randn(len(durations), int(audio_lengths.max()), generator=gen) * NOISE_SCALE
    audio *= torch.arange(audio.size(1)) < audio_lengths[:, None]  # zero padding
    targets = torch.randint(
        1, num_classes, (len(durations), int(target_lengths.max())), generator=gen
    )
    batch = {
        "audio": audio,
        "audio_lengths": audio_lengths,
        "targets": targets,
        "target_lengths": target_lengths,
    }
    # The data loader hands the lengths over on the host too (no device reads in the step).
    return {key: value.to(device) for key, value in batch.items()} | {
        "host_audio_lengths": audio_lengths.tolist(),
        "host_target_lengths": target_lengths.tolist(),
    }


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rnnt_part(
    model: Transducer,
    method: str,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    decoder_out: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """Joiner and RNN-T loss (mean over utterances) from ``encoder_out (B, T', D)`` and the
    prediction network's ``decoder_out (B, U+1, H)``."""
    joiner = model.joiner
    encoder_proj = joiner.encoder_proj(encoder_out)
    predictor_proj = joiner.predictor_proj(decoder_out)
    if method == "fused":
        return fused_rnnt_loss(
            encoder_proj, predictor_proj, joiner.output.weight, joiner.output.bias,
            targets, encoder_lengths, target_lengths,
            blank=model.config.blank_id, activation=joiner.activation,
            chunk_bytes=model.config.loss_chunk_bytes, validate=False,
        )  # fmt: skip
    import torchaudio.functional

    logits = joiner(encoder_proj[:, :, None], predictor_proj[:, None])  # (B, T', U+1, V)
    with torch.autocast(encoder_out.device.type, enabled=False):
        return torchaudio.functional.rnnt_loss(
            logits.float(), targets.int(), encoder_lengths.int(), target_lengths.int(),
            blank=model.config.blank_id, clamp=-1, reduction="mean",
        )  # fmt: skip


def objective(model: Transducer, method: str, batch: dict) -> torch.Tensor:
    """The training objective of ``batch`` by ``method`` (call under the training autocast),
    with the host lengths and without the loss's value checks, as ``TransducerModule`` calls
    the model."""
    audio, audio_lengths = batch["audio"], batch["audio_lengths"]
    targets, target_lengths = batch["targets"], batch["target_lengths"]
    host_audio_lengths = batch["host_audio_lengths"]
    host_target_lengths = batch["host_target_lengths"]
    if method == "fused":
        return model(
            audio, audio_lengths, targets, target_lengths,
            host_audio_lengths=host_audio_lengths, host_target_lengths=host_target_lengths,
            validate=False,
        )  # fmt: skip
    encoder_out, encoder_lengths = model.encode(audio, audio_lengths, max(host_audio_lengths))
    decoder_out = model.decoder(targets, target_lengths)
    loss = rnnt_part(
        model, method, encoder_out, encoder_lengths, decoder_out, targets, target_lengths
    )
    if model.ctc_head is None:
        return loss
    ctc = model.ctc_loss(
        encoder_out,
        model.host_encoder_lengths(host_audio_lengths),
        targets,
        torch.tensor(host_target_lengths),
    )
    return loss + model.config.ctc_weight * ctc


class Trainee:
    """A model with its optimizer and non-finite guard, built as ``TransducerModule`` builds
    them (AdamW with decay and no-decay groups, fused where the device has the kernel)."""

    def __init__(self, preset: str, args: argparse.Namespace) -> None:
        torch.manual_seed(args.seed)
        config = config_from_preset(preset, args.vocab + 1)
        self.model = Transducer(config).to(torch.device(args.device)).train()
        self.optimizer = adamw(
            self.model.named_parameters(), WEIGHT_DECAY, lr=LEARNING_RATE, betas=ADAM_BETAS
        )
        self.guard = NonFiniteGuard(MAX_NONFINITE_STEPS)
        self.precision = args.precision
        self.steps = 0

    def forward_backward(self, method: str, batch: dict) -> torch.Tensor:
        """Forward under the training precision, the guard's update, backward and gradient
        clipping, as Lightning runs ``training_step`` and ``configure_gradient_clipping``."""
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(batch["audio"].device, self.precision):
            loss = objective(self.model, method, batch)
        self.guard.update(loss, self.steps)
        loss.backward()
        clip_gradients(self.model.parameters(), GRADIENT_CLIP_VAL, by_value=False, measure=False)
        return loss.detach()

    def optimizer_step(self) -> None:
        """``on_before_optimizer_step`` (the guard hands its flag over) and the AdamW step."""
        self.guard.hand_to(self.optimizer, self.model.parameters())
        self.optimizer.step()
        self.steps += 1

    def train_step(self, method: str, batch: dict) -> torch.Tensor:
        """One training step; the loss."""
        loss = self.forward_backward(method, batch)
        self.optimizer_step()
        return loss


def loss_inputs(model: Transducer, batch: dict, args: argparse.Namespace) -> dict:
    """The loss part's inputs: encoder and prediction-network outputs as leaves."""
    with torch.no_grad(), _autocast(batch["audio"].device, args.precision):
        encoder_out, encoder_lengths = model.encode(
            batch["audio"], batch["audio_lengths"], max(batch["host_audio_lengths"])
        )
        decoder_out = model.decoder(batch["targets"], batch["target_lengths"])
    return {
        "encoder_out": encoder_out.detach().requires_grad_(),
        "encoder_lengths": encoder_lengths,
        "decoder_out": decoder_out.detach().requires_grad_(),
        "targets": batch["targets"],
        "target_lengths": batch["target_lengths"],
    }


def loss_step(model: Transducer, method: str, inputs: dict, args: argparse.Namespace) -> None:
    """Forward + backward of the joiner and the RNN-T loss alone."""
    model.zero_grad(set_to_none=True)
    inputs["encoder_out"].grad = inputs["decoder_out"].grad = None
    with _autocast(inputs["encoder_out"].device, args.precision):
        loss = rnnt_part(model, method, **inputs)
    loss.backward()


def _rss_kib() -> tuple[int, int]:
    """(resident set size, its peak since the last reset), KiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_peak_memory(preset: str, method: str, args: argparse.Namespace) -> float:
    """Peak RSS growth (MiB) of one step above the RSS after a tiny warm-up step."""
    trainee = Trainee(preset, args)
    device = torch.device(args.device)
    batch = make_batch(args, args.vocab + 1, device)
    tiny = argparse.Namespace(
        **{**vars(args), "batch_seconds": 2 * WARMUP_SECONDS, "utterance_seconds": WARMUP_SECONDS}
    )
    trainee.train_step(method, make_batch(tiny, args.vocab + 1, device))
    # Reset the peak (VmHWM) to the current RSS, so that the imports' and the model's
    # construction's peaks do not hide the step's.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    base, _ = _rss_kib()
    trainee.train_step(method, batch)
    _, peak = _rss_kib()
    return (peak - base) / 2**10


def _memory_in_subprocess(preset: str, method: str, argv: list[str]) -> float:
    cmd = [sys.executable, __file__, *argv, "--worker", preset, method]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker {preset}/{method} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def cuda_peak_memory(trainee: Trainee, method: str, batch: dict) -> tuple[float, float]:
    """(peak growth of one step, resting memory), MiB."""
    device = batch["audio"].device
    trainee.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    resting = torch.cuda.memory_allocated(device)
    trainee.train_step(method, batch)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - resting
    return peak / 2**20, resting / 2**20


def _ops(counts) -> dict:
    return {"kernels": counts.kernels, "host_reads": counts.host_reads}


def _timed(device: torch.device, function, *args) -> float:
    _sync(device)
    start = time.perf_counter()
    function(*args)
    _sync(device)
    return time.perf_counter() - start


def batch_shape(model: Transducer, batch: dict) -> dict:
    """Utterances, audio seconds and lattice sizes of ``batch`` for ``model``."""
    frames = model.host_encoder_lengths(batch["host_audio_lengths"])
    tokens = torch.tensor(batch["host_target_lengths"])
    audio_s = sum(batch["host_audio_lengths"]) / SAMPLE_RATE
    return {
        "utterances": len(tokens),
        "audio_s": round(audio_s, 2),
        "padded_audio_s": round(batch["audio"].numel() / SAMPLE_RATE, 2),
        "max_frames": int(frames.max()),
        "max_tokens": int(tokens.max()),
        "lattice_cells": int((frames * (tokens + 1)).sum()),
        "padded_lattice_cells": len(tokens) * int(frames.max()) * (int(tokens.max()) + 1),
    }


def bench_preset(
    preset: str, methods: list[str], args: argparse.Namespace, argv: list[str]
) -> dict:
    device = torch.device(args.device)
    trainee = Trainee(preset, args)
    model = trainee.model
    batch = make_batch(args, args.vocab + 1, device)
    shape = batch_shape(model, batch)
    result: dict = {
        "parameters": model.num_parameters(),
        "optimizer_fused": is_fused(trainee.optimizer),
        "batch": shape,
        "methods": {},
    }

    first_loss, skipped = {}, {}
    for method in methods:  # the same weights, dropout and SpecAugment masks for each
        torch.manual_seed(args.seed)
        try:
            with torch.no_grad(), _autocast(device, args.precision):
                first_loss[method] = float(objective(model, method, batch))
        except Exception as error:  # noqa: BLE001 - torchaudio built for another torch or device
            if method == "fused":
                raise
            skipped[method] = f"{type(error).__name__}: {error}"[:300]
    methods = [m for m in methods if m not in skipped]
    for method in methods:
        trainee.train_step(method, batch)  # warm-up

    steps: dict[str, list[float]] = {m: [] for m in methods}
    losses: dict[str, list[float]] = {m: [] for m in methods}
    inputs = loss_inputs(model, batch, args)
    for method in methods:
        loss_step(model, method, inputs, args)  # warm-up
    for _ in range(args.repeats):
        for method in methods:
            steps[method].append(_timed(device, trainee.train_step, method, batch))
            losses[method].append(_timed(device, loss_step, model, method, inputs, args))

    for method in methods:
        with count_ops() as step_counts:
            trainee.forward_backward(method, batch)
            _sync(device)
        with count_ops() as optimizer_counts:
            trainee.optimizer_step()
            _sync(device)
        with count_ops() as loss_counts:
            loss_step(model, method, inputs, args)
            _sync(device)
        if device.type == "cuda":
            peak_mb, resting_mb = cuda_peak_memory(trainee, method, batch)
        else:
            peak_mb, resting_mb = _memory_in_subprocess(preset, method, argv), None
        step_s = statistics.median(steps[method])
        loss_s = statistics.median(losses[method])
        result["methods"][method] = {
            "step_s": round(step_s, 4),
            "audio_s_per_s": round(shape["audio_s"] / step_s, 1),
            "loss_s": round(loss_s, 4),
            "loss_share": round(loss_s / step_s, 3),
            "peak_mb": round(peak_mb, 1),
            **({"resting_mb": round(resting_mb, 1)} if resting_mb is not None else {}),
            "step_ops": _ops(step_counts),
            "optimizer_ops": _ops(optimizer_counts),
            "loss_ops": _ops(loss_counts),
            "first_loss": first_loss[method],
            "steps_s": [round(s, 4) for s in steps[method]],
        }
        if not args.json:
            print(preset, method, result["methods"][method], file=sys.stderr)
    for method, reason in skipped.items():
        result["methods"][method] = {"skipped": reason}
    fused, theirs = result["methods"].get("fused"), result["methods"].get("torchaudio")
    if fused and theirs and "skipped" not in theirs:
        result["fused_over_torchaudio"] = {
            key: round(fused[key] / theirs[key], 3) if theirs[key] > 0 else None
            for key in ("step_s", "loss_s", "peak_mb")
        }
        result["first_loss_abs_diff"] = abs(fused["first_loss"] - theirs["first_loss"])
    return result


def _torchaudio_version() -> str | None:
    try:
        import torchaudio
        import torchaudio.functional  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return None
    return torchaudio.__version__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), help="default: by device")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--precision", choices=("bf16-mixed", "32-true"), help="default: by device")
    parser.add_argument("--batch-seconds", type=float, help="audio per batch; default: by device")
    parser.add_argument("--utterance-seconds", type=float, help="longest utterance; by device")
    parser.add_argument("--tokens-per-second", type=float, default=TOKENS_PER_SECOND)
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE, help="pieces, blank not counted")
    parser.add_argument("--repeats", type=int, help="timed steps per method; default: by device")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, help="torch CPU threads; default: torch's")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device}: no CUDA device is available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); run on a machine with a GPU or pass --device cpu."
        )
    cuda = device.type == "cuda"
    defaults = {
        "presets": list(PRESETS_CUDA if cuda else PRESETS_CPU),
        "precision": PRECISION_GPU if cuda and torch.cuda.is_bf16_supported() else PRECISION_CPU,
        "batch_seconds": BATCH_SECONDS_CUDA if cuda else BATCH_SECONDS_CPU,
        "utterance_seconds": UTTERANCE_SECONDS_CUDA if cuda else UTTERANCE_SECONDS_CPU,
        "repeats": REPEATS_CUDA if cuda else REPEATS_CPU,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.utterance_seconds > args.batch_seconds:
        parser.error(
            f"--utterance-seconds {args.utterance_seconds:g} is longer than --batch-seconds "
            f"{args.batch_seconds:g}; a batch holds at least one utterance: raise --batch-seconds."
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:  # CPU child: one preset, one method, one measured step
        peak = cpu_peak_memory(*args.worker, args)
        print(peak)
        return {"peak_mb": peak}

    device = torch.device(args.device)
    tf32 = use_tensor_cores(device)  # as `rnnt fit` sets it
    torchaudio_version = _torchaudio_version()
    methods = [m for m in args.methods if m != "torchaudio" or torchaudio_version]
    child_argv = [a for a in argv if a != "--json"]
    started = time.perf_counter()
    report: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torchaudio": torchaudio_version,
        "threads": torch.get_num_threads(),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "precision": args.precision,
        "tf32_matmul": tf32,
        "gradient_clip_val": GRADIENT_CLIP_VAL,
        "config": {
            "batch_seconds": args.batch_seconds,
            "utterance_seconds": args.utterance_seconds,
            "bucket_max_edge_ratio": BUCKET_MAX_EDGE_RATIO,
            "tokens_per_second": args.tokens_per_second,
            "num_classes": args.vocab + 1,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "time_method": f"median wall time of {args.repeats} steps per method after a warm-up "
        "step, methods interleaved"
        + (", torch.cuda.synchronize around each" if device.type == "cuda" else ""),
        "memory_method": (
            "torch.cuda.max_memory_allocated growth over one step above resting_mb"
            if device.type == "cuda"
            else "peak RSS (VmHWM, reset before the step) growth over one step in a fresh "
            "subprocess per preset and method, after a tiny warm-up step"
        ),
        "presets": {},
    }
    if torchaudio_version is None and "torchaudio" in args.methods:
        report["torchaudio_skipped"] = "torchaudio does not import (pip install torchaudio)"
    for preset in args.presets:
        report["presets"][preset] = bench_preset(preset, methods, args, child_argv)
    large = report["presets"].get("large", {}).get("methods", {}).get("fused")
    if device.type == "cuda" and large:
        report["target"] = {
            "large_loss_share_at_most": LOSS_SHARE_TARGET,
            "measured": large["loss_share"],
            "met": large["loss_share"] <= LOSS_SHARE_TARGET,
        }
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=None if args.json else 2))
    return report


if __name__ == "__main__":
    main()
