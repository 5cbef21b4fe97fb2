"""The RNN-T loss is exact: against path enumeration, a textbook loop, torchaudio and
finite differences; the fused loss equals the plain one, padding is inert, autocast is
ignored, and bad arguments are named."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from rnnt.constants import BLANK_ID, LOSS_CHUNK_BYTES_GPU
from rnnt.loss import fused_rnnt_loss, reference_rnnt_loss, rnnt_loss
from rnnt.loss.lattice import _lattice_loss
from rnnt.op_counts import count_ops

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "silu": F.silu}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ragged(gen, batch, frames, tokens, vocab, blank=BLANK_ID):
    """Targets (B, U) with garbage beyond the lengths; lengths with the maxima present."""
    targets = torch.randint(0, vocab - 1, (batch, tokens), generator=gen)
    targets += (targets >= blank).long()  # any id but blank
    frame_lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
    target_lengths = torch.randint(0, tokens + 1, (batch,), generator=gen)
    frame_lengths[0], target_lengths[-1] = frames, tokens
    for b in range(batch):
        targets[b, target_lengths[b] :] = -7  # must be ignored, even out of range
    return targets, frame_lengths, target_lengths


def _joiner_inputs(gen, batch, frames, tokens, vocab, hidden, dtype=torch.float64):
    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    return (
        leaf(batch, frames, hidden),
        leaf(batch, tokens + 1, hidden),
        leaf(vocab, hidden),
        leaf(vocab),
    )


def _joiner_logits(enc, pred, weight, bias, activation):
    hidden = ACTIVATIONS[activation](enc[:, :, None] + pred[:, None])
    return F.linear(hidden, weight, bias)


def _brute_force_nll(log_probs: torch.Tensor, targets: list[int], blank: int) -> torch.Tensor:
    """-log of the sum over every alignment path, each written out step by step."""
    frames, tokens = log_probs.size(0), len(targets)
    path_scores = []
    # the last step is the final blank; the U labels go anywhere among the other steps
    for label_steps in itertools.combinations(range(frames + tokens - 1), tokens):
        t = u = 0
        score = log_probs.new_zeros(())
        for step in range(frames + tokens):
            if step in label_steps:
                score = score + log_probs[t, u, targets[u]]
                u += 1
            else:
                score = score + log_probs[t, u, blank]
                t += 1
        path_scores.append(score)
    return -torch.logsumexp(torch.stack(path_scores), dim=0)


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
@pytest.mark.parametrize("tokens", [0, 1, 2, 3])
def test_rnnt_loss_equals_sum_over_enumerated_paths(frames, tokens):
    gen = _gen(100 * frames + tokens)
    vocab, pad_frames, pad_tokens = 4, 2, 1
    logits = torch.randn(2, frames + pad_frames, tokens + pad_tokens + 1, vocab, generator=gen)
    logits = logits.double()
    targets = torch.randint(1, vocab, (2, tokens + pad_tokens), generator=gen)
    frame_lengths = torch.tensor([frames, frames + pad_frames])
    target_lengths = torch.tensor([tokens, tokens + pad_tokens])
    losses = rnnt_loss(logits, targets, frame_lengths, target_lengths, reduction="none")
    log_probs = logits.log_softmax(-1)
    for b in range(2):
        n_frames, n_tokens = int(frame_lengths[b]), int(target_lengths[b])
        lattice = log_probs[b, :n_frames, : n_tokens + 1]
        expected = _brute_force_nll(lattice, targets[b, :n_tokens].tolist(), BLANK_ID)
        torch.testing.assert_close(losses[b], expected, rtol=1e-12, atol=1e-12)


def test_rnnt_loss_and_grad_equal_reference_loop():
    gen = _gen(1)
    targets, frame_lengths, target_lengths = _ragged(gen, 4, 6, 4, 5, blank=2)
    logits = torch.randn(4, 6, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = rnnt_loss(logits, targets, frame_lengths, target_lengths, blank=2)
    safe = targets.clamp(min=0)
    expected = reference_rnnt_loss(logits, safe, frame_lengths, target_lengths, blank=2)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_rnnt_loss_gradcheck():
    gen = _gen(2)
    targets, frame_lengths, target_lengths = _ragged(gen, 3, 4, 3, 4)
    logits = torch.randn(3, 4, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)

    def loss_fn(x):
        return rnnt_loss(x, targets, frame_lengths, target_lengths, reduction="none")

    assert torch.autograd.gradcheck(loss_fn, (logits,))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_fused_rnnt_loss_gradcheck(activation):
    gen = _gen(3)
    targets, frame_lengths, target_lengths = _ragged(gen, 2, 3, 2, 4)
    inputs = _joiner_inputs(gen, 2, 3, 2, 4, 3)

    def loss_fn(enc, pred, weight, bias):
        return fused_rnnt_loss(
            enc, pred, weight, bias, targets, frame_lengths, target_lengths,
            activation=activation, reduction="none", chunk_bytes=1,
        )  # fmt: skip

    assert torch.autograd.gradcheck(loss_fn, inputs)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
# 1 byte: one frame per chunk; 2**40: the whole lattice in one; between: 2 and 3 frames of
# the 3 x 5 x 7 cells of V=6, H=8 in float64 (a cell is 6 x 16 + 2 x 8 x 8 = 224 bytes).
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 21 * 224, 3 * 21 * 224, 2**40])
def test_fused_loss_equals_plain(activation, chunk_bytes):
    gen = _gen(4)
    targets, frame_lengths, target_lengths = _ragged(gen, 3, 5, 4, 6, blank=1)
    inputs = _joiner_inputs(gen, 3, 5, 4, 6, 8)
    fused = fused_rnnt_loss(
        *inputs, targets, frame_lengths, target_lengths, blank=1, activation=activation,
        chunk_bytes=chunk_bytes,
    )  # fmt: skip
    logits = _joiner_logits(*inputs, activation)
    plain = rnnt_loss(logits, targets, frame_lengths, target_lengths, blank=1)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(fused, inputs), torch.autograd.grad(plain, inputs), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("frames,tokens", [(1, 0), (1, 3), (5, 0), (2, 1)])
def test_fused_loss_on_edge_lattices_equals_path_enumeration(frames, tokens):
    # T=1 (every token at the one frame), U=0 (blanks only), inside a batch with a longer
    # utterance, so that the short one's lattice is all padding but a corner.
    gen = _gen(12 + 10 * frames + tokens)
    vocab = 5
    enc, pred, weight, bias = _joiner_inputs(gen, 2, frames + 2, tokens + 1, vocab, 6)
    targets = torch.randint(1, vocab, (2, tokens + 1), generator=gen)
    frame_lengths = torch.tensor([frames, frames + 2])
    target_lengths = torch.tensor([tokens, tokens + 1])
    losses = fused_rnnt_loss(
        enc, pred, weight, bias, targets, frame_lengths, target_lengths, reduction="none",
        chunk_bytes=1,
    )  # fmt: skip
    log_probs = _joiner_logits(enc, pred, weight, bias, "tanh").log_softmax(-1)
    for b in range(2):
        n_frames, n_tokens = int(frame_lengths[b]), int(target_lengths[b])
        lattice = log_probs[b, :n_frames, : n_tokens + 1]
        expected = _brute_force_nll(lattice, targets[b, :n_tokens].tolist(), BLANK_ID)
        torch.testing.assert_close(losses[b], expected, rtol=1e-12, atol=1e-12)
        got = torch.autograd.grad(losses[b], (enc, pred, weight, bias), retain_graph=True)
        want = torch.autograd.grad(expected, (enc, pred, weight, bias), retain_graph=True)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_fused_loss_without_bias_in_float32_equals_plain():
    gen = _gen(5)
    targets, frame_lengths, target_lengths = _ragged(gen, 4, 9, 5, 11)
    enc, pred, weight, _ = _joiner_inputs(gen, 4, 9, 5, 11, 16, dtype=torch.float32)
    fused = fused_rnnt_loss(enc, pred, weight, None, targets, frame_lengths, target_lengths)
    logits = _joiner_logits(enc, pred, weight, None, "tanh")
    plain = rnnt_loss(logits, targets, frame_lengths, target_lengths)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        torch.autograd.grad(fused, (enc, pred, weight)),
        torch.autograd.grad(plain, (enc, pred, weight)),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_padding_changes_nothing_and_gets_zero_gradient():
    gen = _gen(6)
    batch, frames, tokens, vocab, hidden, extra_t, extra_u = 3, 4, 3, 5, 6, 3, 2
    targets, frame_lengths, target_lengths = _ragged(gen, batch, frames, tokens, vocab)
    enc, pred, weight, bias = _joiner_inputs(gen, batch, frames, tokens, vocab, hidden)
    enc_pad = torch.cat(
        [enc.detach(), 50 * torch.randn(batch, extra_t, hidden, generator=gen, dtype=enc.dtype)], 1
    )
    pred_pad = torch.cat(
        [pred.detach(), 50 * torch.randn(batch, extra_u, hidden, generator=gen, dtype=enc.dtype)], 1
    )
    targets_pad = torch.cat([targets, torch.full((batch, extra_u), 999)], 1)
    enc_pad.requires_grad_()
    pred_pad.requires_grad_()

    def fused(e, p, t):
        return fused_rnnt_loss(
            e, p, weight, bias, t, frame_lengths, target_lengths, reduction="none", chunk_bytes=5000
        )

    tight, padded = fused(enc, pred, targets), fused(enc_pad, pred_pad, targets_pad)
    torch.testing.assert_close(padded, tight, rtol=0, atol=1e-12)
    g_enc, g_pred, g_weight = torch.autograd.grad(tight.sum(), (enc, pred, weight))
    p_enc, p_pred, p_weight = torch.autograd.grad(padded.sum(), (enc_pad, pred_pad, weight))
    torch.testing.assert_close(p_enc[:, :frames], g_enc, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_pred[:, : tokens + 1], g_pred, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_weight, g_weight, rtol=0, atol=1e-12)
    for b in range(batch):
        assert not p_enc[b, frame_lengths[b] :].any()
        assert not p_pred[b, target_lengths[b] + 1 :].any()

    # the same for the loss on given logits, padding filled with large garbage
    logits = torch.randn(batch, frames, tokens + 1, vocab, generator=gen, dtype=torch.float64)
    logits_pad = 30 * torch.randn(
        batch, frames + extra_t, tokens + 1 + extra_u, vocab, generator=gen, dtype=torch.float64
    )
    for b in range(batch):
        n_t, n_u = int(frame_lengths[b]), int(target_lengths[b]) + 1
        logits_pad[b, :n_t, :n_u] = logits[b, :n_t, :n_u]
    logits.requires_grad_()
    logits_pad.requires_grad_()
    tight = rnnt_loss(logits, targets, frame_lengths, target_lengths, reduction="sum")
    padded = rnnt_loss(logits_pad, targets_pad, frame_lengths, target_lengths, reduction="sum")
    torch.testing.assert_close(padded, tight, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(tight, logits)
    (grad_pad,) = torch.autograd.grad(padded, logits_pad)
    for b in range(batch):
        n_t, n_u = int(frame_lengths[b]), int(target_lengths[b]) + 1
        torch.testing.assert_close(grad_pad[b, :n_t, :n_u], grad[b, :n_t, :n_u], rtol=0, atol=1e-12)
        assert not grad_pad[b, n_t:].any() and not grad_pad[b, :, n_u:].any()
        assert not grad[b, n_t:].any() and not grad[b, :, n_u:].any()


@pytest.mark.parametrize("fused", [False, True])
def test_reductions(fused):
    gen = _gen(7)
    targets, frame_lengths, target_lengths = _ragged(gen, 3, 4, 3, 5)
    inputs = _joiner_inputs(gen, 3, 4, 3, 5, 4)

    def loss(reduction):
        if fused:
            return fused_rnnt_loss(
                *inputs, targets, frame_lengths, target_lengths, reduction=reduction
            )
        logits = _joiner_logits(*inputs, "tanh")
        return rnnt_loss(logits, targets, frame_lengths, target_lengths, reduction=reduction)

    per_utterance = loss("none")
    assert per_utterance.shape == (3,) and (per_utterance > 0).all()
    torch.testing.assert_close(loss("sum"), per_utterance.sum())
    torch.testing.assert_close(loss("mean"), per_utterance.mean())
    weights = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    got = torch.autograd.grad((per_utterance * weights).sum(), inputs)
    want = [
        sum(w * g for w, g in zip(weights, per_b, strict=True))
        for per_b in zip(
            *(torch.autograd.grad(loss("none")[b], inputs) for b in range(3)), strict=True
        )
    ]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


class _MatmulDtypes(TorchDispatchMode):
    """Records the input dtypes of every matrix product dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.dtypes.update(x.dtype for x in args if isinstance(x, torch.Tensor))
        return func(*args, **(kwargs or {}))


def test_fused_loss_under_bf16_autocast_multiplies_in_bf16_within_stated_tolerance():
    # The stated tolerance of bf16 autocast against float32: loss within 1e-3 relative,
    # gradients within 1e-2 relative (L2). Measured here: 5e-4 and 5e-3 at most, as for the
    # plain loss on autocast's bf16 joiner logits (5e-4 and 3e-3).
    gen = _gen(8)
    batch, frames, tokens, vocab, hidden = 4, 40, 12, 128, 64
    targets, frame_lengths, target_lengths = _ragged(gen, batch, frames, tokens, vocab)
    enc, pred, weight, bias = _joiner_inputs(
        gen, batch, frames, tokens, vocab, hidden, torch.float32
    )
    with torch.no_grad():
        weight /= hidden**0.5
    inputs = (enc, pred, weight, bias)
    args = (targets, frame_lengths, target_lengths)
    want = fused_rnnt_loss(*inputs, *args)
    want_grads = torch.autograd.grad(want, inputs)
    matmuls = _MatmulDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), matmuls:
        got = fused_rnnt_loss(*inputs, *args)
        got_grads = torch.autograd.grad(got, inputs)
    assert matmuls.dtypes == {torch.bfloat16}
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-3, atol=0)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g.dtype == torch.float32
        assert (g - w).norm() <= 1e-2 * w.norm()

    bf16_inputs = [x.detach().bfloat16().requires_grad_() for x in inputs]
    loss = fused_rnnt_loss(*bf16_inputs, *args)
    assert loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, bf16_inputs)
    assert all(g.dtype == torch.bfloat16 for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("frames,tokens", [(150, 40), (20, 90)])
def test_long_lattice_occupancies_count_frames_and_tokens(frames, tokens, dtype):
    # Every path emits exactly T_b blanks and U_b labels, so the gradients w.r.t. the blank
    # and label log-probs sum to -T_b and -U_b: a check of alpha and beta on long, peaky
    # lattices in both loop orientations (over T and over U).
    gen = _gen(9)
    batch = 3
    log_probs = 8 * torch.randn(batch, frames, tokens + 1, 2, generator=gen, dtype=dtype)
    log_probs = log_probs.log_softmax(-1)
    frame_lengths = torch.tensor([frames, frames // 2, 1])
    target_lengths = torch.tensor([tokens, 0, tokens // 3])
    loss, grad_blank, grad_target = _lattice_loss(
        log_probs[..., 0], log_probs[..., 1], frame_lengths, target_lengths
    )
    assert torch.isfinite(loss).all() and (loss > 0).all()
    assert loss.dtype == grad_blank.dtype == grad_target.dtype == dtype
    # float32: each of the T x U occupancies carries its rounding; 1.1e-5 measured at 150 x 41
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(grad_blank.sum((1, 2)), -frame_lengths.to(dtype), **tolerance)
    torch.testing.assert_close(grad_target.sum((1, 2)), -target_lengths.to(dtype), **tolerance)
    assert (grad_blank <= 0).all() and (grad_target <= 0).all()


def test_rnnt_loss_equals_torchaudio():
    torchaudio_functional = pytest.importorskip("torchaudio.functional")
    gen = _gen(10)
    batch, frames, tokens, vocab = 5, 12, 6, 9
    targets, frame_lengths, target_lengths = _ragged(gen, batch, frames, tokens, vocab)
    targets = targets.clamp(min=1)  # torchaudio reads padding targets too
    logits = torch.randn(batch, frames, tokens + 1, vocab, generator=gen, requires_grad=True)
    ours = rnnt_loss(logits, targets, frame_lengths, target_lengths, reduction="none")
    theirs = torchaudio_functional.rnnt_loss(
        logits, targets.int(), frame_lengths.int(), target_lengths.int(),
        blank=BLANK_ID, clamp=-1, reduction="none",
    )  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    weights = torch.rand(batch, generator=gen)
    (grad,) = torch.autograd.grad((ours * weights).sum(), logits)
    (expected,) = torch.autograd.grad((theirs * weights).sum(), logits)
    for b in range(batch):  # torchaudio leaves padding gradients undefined in older releases
        n_t, n_u = int(frame_lengths[b]), int(target_lengths[b]) + 1
        torch.testing.assert_close(
            grad[b, :n_t, :n_u], expected[b, :n_t, :n_u], rtol=1e-4, atol=1e-5
        )


def test_fused_loss_equals_torchaudio_in_float32():
    torchaudio_functional = pytest.importorskip("torchaudio.functional")
    gen = _gen(13)
    batch, frames, tokens, vocab, hidden = 4, 60, 20, 64, 32
    targets, frame_lengths, target_lengths = _ragged(gen, batch, frames, tokens, vocab)
    targets = targets.clamp(min=1)  # torchaudio reads padding targets too
    inputs = _joiner_inputs(gen, batch, frames, tokens, vocab, hidden, dtype=torch.float32)
    args = (targets, frame_lengths, target_lengths)
    ours = fused_rnnt_loss(*inputs, *args, chunk_bytes=50_000)  # several chunks
    theirs = torchaudio_functional.rnnt_loss(
        _joiner_logits(*inputs, "tanh"), *(x.int() for x in args), blank=BLANK_ID, clamp=-1
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    for got, want in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True
    ):
        # Sums over many cells in float32: both are ~5e-5 of the largest gradient away from
        # float64 (measured), so they agree to a few 1e-4 of it.
        torch.testing.assert_close(got, want, rtol=1e-4, atol=3e-4 * want.abs().max().item())


def _bad_call(case: str):
    gen = _gen(11)
    logits = torch.randn(2, 3, 3, 4, generator=gen)
    targets = torch.tensor([[1, 2], [3, 0]])
    frame_lengths, target_lengths = torch.tensor([3, 2]), torch.tensor([2, 1])
    enc, pred, weight, bias = _joiner_inputs(gen, 2, 3, 2, 4, 5, dtype=torch.float32)
    calls = {
        "target_lengths": lambda: rnnt_loss(logits, targets, frame_lengths, torch.tensor([3, 1])),
        "logit_lengths": lambda: rnnt_loss(logits, targets, torch.tensor([4, 2]), target_lengths),
        "at least one frame": lambda: rnnt_loss(
            logits, targets, torch.tensor([3, 0]), target_lengths
        ),
        "targets must be an integer": lambda: rnnt_loss(
            logits, targets.float(), frame_lengths, target_lengths
        ),
        "targets has 3 columns": lambda: rnnt_loss(
            logits, torch.ones(2, 3, dtype=torch.long), frame_lengths, target_lengths
        ),
        r"targets\[1, 0\] = 0": lambda: rnnt_loss(
            logits, torch.tensor([[1, 2], [0, 1]]), frame_lengths, target_lengths
        ),
        r"targets\[0, 1\] = 4": lambda: rnnt_loss(
            logits, torch.tensor([[1, 4], [1, 1]]), frame_lengths, target_lengths
        ),
        "logits must be a 4-D": lambda: rnnt_loss(
            logits[0], targets, frame_lengths, target_lengths
        ),
        "reduction": lambda: rnnt_loss(
            logits, targets, frame_lengths, target_lengths, reduction="avg"
        ),
        "predictor_proj has shape": lambda: fused_rnnt_loss(
            enc, pred[..., :4], weight, bias, targets, frame_lengths, target_lengths
        ),
        r"weight has shape \(4, 4\)": lambda: fused_rnnt_loss(
            enc, pred, weight[:, :4], bias, targets, frame_lengths, target_lengths
        ),
        "encoder_lengths": lambda: fused_rnnt_loss(
            enc, pred, weight, bias, targets, torch.tensor([5, 2]), target_lengths
        ),
        "activation": lambda: fused_rnnt_loss(
            enc, pred, weight, bias, targets, frame_lengths, target_lengths, activation="gelu"
        ),
        "chunk_bytes": lambda: fused_rnnt_loss(
            enc, pred, weight, bias, targets, frame_lengths, target_lengths, chunk_bytes=0
        ),
    }
    return calls[case]


@pytest.mark.parametrize(
    "message",
    [
        "target_lengths",
        "logit_lengths",
        "at least one frame",
        "targets must be an integer",
        "targets has 3 columns",
        r"targets\[1, 0\] = 0",
        r"targets\[0, 1\] = 4",
        "logits must be a 4-D",
        "reduction",
        "predictor_proj has shape",
        r"weight has shape \(4, 4\)",
        "encoder_lengths",
        "activation",
        "chunk_bytes",
    ],
)
def test_invalid_arguments_are_named(message):
    with pytest.raises(ValueError, match=message):
        _bad_call(message)()


def _meta_loss_ops(batch, frames, tokens, vocab, hidden, **kwargs):
    """Ops of one fused forward + backward on the meta device (shapes only, no arithmetic)."""

    def leaf(*shape):
        return torch.empty(*shape, device="meta", requires_grad=True)

    enc, pred = leaf(batch, frames, hidden), leaf(batch, tokens + 1, hidden)
    weight, bias = leaf(vocab, hidden), leaf(vocab)
    targets = torch.ones(batch, tokens, dtype=torch.long, device="meta")
    frame_lengths = torch.full((batch,), frames, device="meta")
    target_lengths = torch.full((batch,), tokens, device="meta")
    with count_ops() as ops:
        loss = fused_rnnt_loss(
            enc, pred, weight, bias, targets, frame_lengths, target_lengths, validate=False,
            **kwargs,
        )  # fmt: skip
        loss.backward()
    return ops


# The reference batch: B=64, T=300, U=80, V=1024, H=640. Its fused loss dispatched
# ~18,300 ops before (one block per utterance piece); documented now (README, benchmarks/loss.py):
REFERENCE_BATCH = (64, 300, 80, 1024, 640)
REFERENCE_KERNELS_AT_GPU_BUDGET = 1100


def test_fused_loss_ops_do_not_grow_with_the_batch():
    # With the whole lattice in one chunk, 8 or 64 utterances dispatch the same ops: a chunk
    # spans the batch. What remains is two ops per lattice row of the shorter side.
    ops = {b: _meta_loss_ops(b, 100, 40, 64, 32, chunk_bytes=2**50) for b in (8, 64)}
    assert ops[8].kernels == ops[64].kernels
    assert ops[8].by_op["logcumsumexp"] == 41  # alpha and beta in one loop over U+1 rows
    one_frame = _meta_loss_ops(8, 100, 40, 64, 32, chunk_bytes=1)  # 100 chunks of one frame
    # 18 ops a chunk (5 forward, 13 backward), plus concatenating the chunks' results
    assert one_frame.kernels - ops[8].kernels <= 18 * 99 + 3


def test_fused_loss_ops_at_the_reference_batch_are_documented():
    ops = _meta_loss_ops(*REFERENCE_BATCH, chunk_bytes=LOSS_CHUNK_BYTES_GPU)
    assert ops.kernels <= REFERENCE_KERNELS_AT_GPU_BUDGET
    assert ops.host_reads == 0


def test_fused_loss_reads_the_host_only_to_validate():
    gen = _gen(11)
    targets, frame_lengths, target_lengths = _ragged(gen, 3, 6, 4, 7)
    inputs = _joiner_inputs(gen, 3, 6, 4, 7, 8, dtype=torch.float32)
    for validate, reads in ((False, 0), (True, 3)):
        with count_ops() as ops:
            fused_rnnt_loss(*inputs, targets, frame_lengths, target_lengths, validate=validate)
        assert ops.host_reads == reads, ops.reads_by_kind
