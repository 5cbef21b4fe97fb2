"""Memory and time of the fused RNN-T loss against the plain path (and torchaudio).

For one forward + backward of the joiner and the loss on a ragged batch, measures:

- ``fused``: ``rnnt.loss.fused_rnnt_loss`` on the joiner's projected inputs;
- ``plain``: the joiner's full (B, T, U+1, V) logits, then ``rnnt.loss.rnnt_loss``;
- ``torchaudio``: the same logits, then ``torchaudio.functional.rnnt_loss`` (if importable).

With ``--bf16`` the fused and plain paths run under bf16 autocast (the joiner's matrix
products in bf16, as in ``bf16-mixed`` training); torchaudio, which takes no bf16 logits, gets
the same bf16 logits cast to float32. ``ops`` counts the kernels (and views) the fused loss
dispatches in one forward + backward at this configuration and at the issue's reference batch
(B=64, T=300, U=80, V=1024, H=640), on the "meta" device (no arithmetic), with the CPU's and a
GPU's default chunk budgets: on a GPU each kernel is one launch.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above what the inputs hold; on CPU
each method runs in a fresh subprocess (glibc with one arena and a fixed 64 KiB mmap
threshold, so that freed blocks leave the resident set) and reports its peak resident set size
(ru_maxrss) growth above the level reached once the inputs exist (after a tiny warm-up run that pages in
kernels and thread pools). Time: median wall time over ``--repeats`` runs after one warm-up
round, in one process with the methods interleaved.

    python benchmarks/loss.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from rnnt.constants import (
    BLANK_ID,
    JOINER_ACTIVATION,
    LOSS_CHUNK_BYTES_CPU,
    LOSS_CHUNK_BYTES_GPU,
    SEED,
)
from rnnt.loss import fused_rnnt_loss, rnnt_loss
from rnnt.op_counts import count_ops

# The figure's configuration: a 16-second-ish utterance batch of a medium model.
BATCH = 8
FRAMES = 200
TOKENS = 60
VOCAB = 1024
HIDDEN = 512
REPEATS = 3
MIN_LENGTH_FRACTION = 0.7  # ragged lengths: T_b in [0.7 T, T], U_b in [0.7 U, U]
MEMORY_TARGET = 0.2  # fused peak memory at most 1/5 of the plain path's
TIME_TARGET = 1.5  # fused time at most 1.5x the plain path's
TORCHAUDIO_MEMORY_TARGET = 0.05  # fused peak memory at most 1/20 of torchaudio's
TORCHAUDIO_TIME_TARGET = 0.5  # fused time at most half of torchaudio's
OPS_REFERENCE = {"batch": 64, "frames": 300, "tokens": 80, "vocab": 1024, "hidden": 640}
METHODS = ("fused", "plain", "torchaudio")


def make_inputs(args: argparse.Namespace) -> dict:
    """Seeded joiner inputs and ragged lengths; the longest utterance fills T and U."""
    gen = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    b, t, u, v, h = args.batch, args.frames, args.tokens, args.vocab, args.hidden

    def lengths(full: int, low: int) -> torch.Tensor:
        values = torch.randint(low, full + 1, (b,), generator=gen)
        values[0] = full
        return values.to(device)

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        if device.type == "meta":
            return torch.empty(*shape, device=device, requires_grad=True)
        return (torch.randn(*shape, generator=gen) * scale).to(device).requires_grad_()

    return {
        "encoder_proj": leaf(b, t, h),
        "predictor_proj": leaf(b, u + 1, h),
        "weight": leaf(v, h, scale=h**-0.5),
        "bias": leaf(v, scale=0.1),
        "targets": torch.randint(1, v, (b, u), generator=gen).to(device),
        "encoder_lengths": lengths(t, max(1, int(MIN_LENGTH_FRACTION * t))),
        "target_lengths": lengths(u, int(MIN_LENGTH_FRACTION * u)),
    }


def _joiner_logits(inputs: dict, activation: str) -> torch.Tensor:
    pre = inputs["encoder_proj"][:, :, None] + inputs["predictor_proj"][:, None]
    hidden = {"tanh": torch.tanh, "relu": torch.relu, "silu": torch.nn.functional.silu}[activation](
        pre
    )
    return torch.nn.functional.linear(hidden, inputs["weight"], inputs["bias"])


def run_once(method: str, inputs: dict, args: argparse.Namespace) -> None:
    """One forward + backward of ``method``; leaves gradients in the inputs."""
    device = torch.device(args.device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        loss = _loss(method, inputs, args)
    loss.backward()


def _loss(method: str, inputs: dict, args: argparse.Namespace) -> torch.Tensor:
    lengths = (inputs["targets"], inputs["encoder_lengths"], inputs["target_lengths"])
    if method == "fused":
        return fused_rnnt_loss(
            inputs["encoder_proj"], inputs["predictor_proj"], inputs["weight"], inputs["bias"],
            *lengths, blank=BLANK_ID, activation=args.activation, chunk_bytes=args.chunk_bytes,
        )  # fmt: skip
    if method == "plain":
        return rnnt_loss(_joiner_logits(inputs, args.activation), *lengths, blank=BLANK_ID)
    import torchaudio.functional

    return torchaudio.functional.rnnt_loss(
        _joiner_logits(inputs, args.activation).float(), *(x.int() for x in lengths),
        blank=BLANK_ID, clamp=-1, reduction="mean",
    )  # fmt: skip


def op_counts(config: dict, args: argparse.Namespace) -> dict:
    """Kernels and views of one fused forward + backward on the meta device, per budget."""
    shape = argparse.Namespace(**{**vars(args), **config, "device": "meta"})
    counts = {}
    for name, budget in (
        ("cpu_budget", LOSS_CHUNK_BYTES_CPU),
        ("gpu_budget", LOSS_CHUNK_BYTES_GPU),
    ):
        inputs = make_inputs(shape)
        lengths = (inputs["targets"], inputs["encoder_lengths"], inputs["target_lengths"])
        with count_ops() as ops:
            fused_rnnt_loss(
                inputs["encoder_proj"], inputs["predictor_proj"], inputs["weight"],
                inputs["bias"], *lengths, activation=args.activation, chunk_bytes=budget,
                validate=False,
            ).backward()  # fmt: skip
        counts[name] = {"chunk_bytes": budget, "kernels": ops.kernels, "views": ops.views}
    return {"config": config} | counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clear_grads(inputs: dict) -> None:
    for x in inputs.values():
        x.grad = None


def peak_memory(method: str, inputs: dict, args: argparse.Namespace) -> float:
    """Peak memory growth (MiB) of one forward + backward above what the inputs hold."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run_once(method, inputs, args)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        # A tiny run first pages in the kernels and thread pools, which are not the method's.
        tiny = argparse.Namespace(**{**vars(args), "batch": 2, "frames": 3, "tokens": 2})
        run_once(method, make_inputs(tiny), tiny)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        run_once(method, inputs, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    _clear_grads(inputs)
    return peak / 2**20


def median_times(methods: list[str], inputs: dict, args: argparse.Namespace) -> dict:
    """Median seconds per forward + backward; methods interleaved so that drift in a shared
    machine's speed hits them alike."""
    device = torch.device(args.device)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for repeat in range(args.repeats + 1):  # the first round is a warm-up
        for method in methods:
            _clear_grads(inputs)
            _sync(device)
            start = time.perf_counter()
            run_once(method, inputs, args)
            _sync(device)
            if repeat > 0:
                times[method].append(time.perf_counter() - start)
    _clear_grads(inputs)
    return times


def _shape(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("batch", "frames", "tokens", "vocab", "hidden")}


def _available(method: str) -> bool:
    if method != "torchaudio":
        return True
    try:
        import torchaudio.functional  # noqa: F401
    except Exception:  # absent, or built for another torch
        return False
    return True


def _memory_in_subprocess(method: str, argv: list[str]) -> float:
    cmd = [sys.executable, __file__, *argv, "--worker", method]
    # glibc keeps freed blocks in per-thread arenas and raises its mmap threshold as it
    # goes, so peak RSS would wander by hundreds of MB from run to run; one arena and a fixed
    # 64 KiB threshold return every large block on free, so RSS follows the live tensors.
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", "-B", type=int, default=BATCH)
    parser.add_argument("--frames", "-T", type=int, default=FRAMES)
    parser.add_argument("--tokens", "-U", type=int, default=TOKENS)
    parser.add_argument("--vocab", "-V", type=int, default=VOCAB)
    parser.add_argument("--hidden", "-H", type=int, default=HIDDEN)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--chunk-bytes", type=int, default=None, help="fused loss chunk budget (device default)"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (fused and plain)")
    parser.add_argument("--activation", default=JOINER_ACTIVATION)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    if args.worker:  # CPU child: inputs first, then one run of the one method
        peak = peak_memory(args.worker, make_inputs(args), args)
        print(peak)
        return {"peak_mb": peak}

    device = torch.device(args.device)
    methods = [m for m in args.methods if _available(m)]
    inputs = make_inputs(args)
    child_argv = [a for a in argv if a != "--json"]
    memory = {
        m: peak_memory(m, inputs, args)
        if device.type == "cuda"
        else _memory_in_subprocess(m, child_argv)
        for m in methods
    }
    times = median_times(methods, inputs, args)
    results: dict[str, dict | None] = {m: None for m in args.methods}
    for m in methods:
        results[m] = {
            "peak_mb": memory[m],
            "median_s": statistics.median(times[m]),
            "times_s": times[m],
        }
        if not args.json:
            print(m, results[m], file=sys.stderr)

    report = {
        "config": {k: getattr(args, k) for k in ("batch", "frames", "tokens", "vocab", "hidden")}
        | {"chunk_bytes": args.chunk_bytes, "activation": args.activation, "seed": args.seed}
        | {"bf16": args.bf16},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "memory_method": (
            "torch.cuda.max_memory_allocated growth over the inputs, one forward+backward"
            if device.type == "cuda"
            else "peak RSS (ru_maxrss) growth in a fresh subprocess per method, from after the "
            "inputs exist and a tiny warm-up run, over one forward+backward"
        ),
        "time_method": f"median wall time of {args.repeats} forward+backward runs per method, "
        "methods interleaved, after one warm-up round",
        "methods": results,
        "ops": [op_counts(config, args) for config in (_shape(args), OPS_REFERENCE)],
    }
    fused, plain = results.get("fused"), results.get("plain")
    if fused and plain:
        memory_ratio = fused["peak_mb"] / plain["peak_mb"]
        time_ratio = fused["median_s"] / plain["median_s"]
        report["ratios"] = {
            "memory_fused_over_plain": memory_ratio,
            "time_fused_over_plain": time_ratio,
        }
        report["targets"] = {
            "memory_at_most": MEMORY_TARGET,
            "time_at_most": TIME_TARGET,
            "memory_met": memory_ratio <= MEMORY_TARGET,
            "time_met": time_ratio <= TIME_TARGET,
        }
    audio = results.get("torchaudio")
    if fused and audio:
        memory_ratio = fused["peak_mb"] / audio["peak_mb"]
        time_ratio = fused["median_s"] / audio["median_s"]
        report.setdefault("ratios", {}).update(
            memory_fused_over_torchaudio=memory_ratio, time_fused_over_torchaudio=time_ratio
        )
        report.setdefault("targets", {}).update(
            memory_vs_torchaudio_at_most=TORCHAUDIO_MEMORY_TARGET,
            time_vs_torchaudio_at_most=TORCHAUDIO_TIME_TARGET,
            memory_vs_torchaudio_met=memory_ratio <= TORCHAUDIO_MEMORY_TARGET,
            time_vs_torchaudio_met=time_ratio <= TORCHAUDIO_TIME_TARGET,
        )
    print(json.dumps(report, indent=None if args.json else 2))
    return report


if __name__ == "__main__":
    main()
