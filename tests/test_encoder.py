"""Conformer encoder: lengths, padding invariance, attention-context limit, causality, the
attention masks SDPA's fast kernels take, torch.compile without graph breaks, no host reads."""

from __future__ import annotations

import pytest
import torch

import rnnt.models.encoder as encoder_module
from rnnt.models.encoder import ConformerEncoder
from rnnt.models.masks import attention_mask, padding_mask
from rnnt.op_counts import count_ops

N_MELS = 16


def _encoder(**overrides) -> ConformerEncoder:
    torch.manual_seed(0)
    options = dict(
        n_mels=N_MELS,
        d_model=32,
        num_layers=2,
        num_heads=2,
        ff_mult=2,
        conv_kernel_size=5,
        subsampling_factor=4,
        subsampling_channels=8,
        attention_context_size=[-1, -1],
        causal_conv=False,
        dropout=0.1,
    )
    options.update(overrides)
    return ConformerEncoder(**options).eval()


def _features(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.zeros(len(lengths), max(lengths), N_MELS)
    for row, length in enumerate(lengths):
        features[row, :length] = torch.randn(length, N_MELS, generator=generator)
    return features, torch.tensor(lengths)


@pytest.mark.parametrize("factor", [4, 8])
def test_output_lengths_are_ceil_of_input_over_factor(factor):
    encoder = _encoder(subsampling_factor=factor)
    lengths = [1, 3, 4, 5, 8, 9, 31, 32, 33, 100]
    features, feature_lengths = _features(lengths)
    with torch.no_grad():
        encoder_out, encoder_lengths = encoder(features, feature_lengths)
        expected = [-(-length // factor) for length in lengths]
        assert encoder_lengths.tolist() == expected
        assert encoder_out.shape == (len(lengths), max(expected), 32)
        for row, length in enumerate(lengths):
            alone, _ = encoder(features[row : row + 1, :length], feature_lengths[row : row + 1])
            assert alone.size(1) == expected[row]


def test_unsupported_subsampling_factor_is_an_error():
    with pytest.raises(ValueError, match="subsampling_factor=6"):
        _encoder(subsampling_factor=6)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"subsampling_factor": 8},
        {"causal_conv": True, "attention_context_size": [4, 0]},
        {"attention_context_size": [3, 2]},
    ],
)
def test_padding_invariance(options):
    encoder = _encoder(**options)
    lengths = [97, 40, 13, 64]
    features, feature_lengths = _features(lengths)
    with torch.no_grad():
        batched, batched_lengths = encoder(features, feature_lengths)
        for row, length in enumerate(lengths):
            alone, alone_lengths = encoder(
                features[row : row + 1, :length], feature_lengths[row : row + 1]
            )
            assert alone_lengths.item() == batched_lengths[row].item()
            torch.testing.assert_close(
                batched[row, : alone.size(1)], alone[0], atol=1e-5, rtol=1e-4
            )
            assert torch.all(batched[row, alone.size(1) :] == 0)


def test_padding_values_never_reach_valid_frames():
    encoder = _encoder()
    features, lengths = _features([80, 30])
    garbage = features.clone()
    garbage[1, 30:] = 1e3 * torch.randn(50, N_MELS)
    with torch.no_grad():
        clean, _ = encoder(features, lengths)
        dirty, _ = encoder(garbage, lengths)
    torch.testing.assert_close(clean, dirty, atol=1e-5, rtol=1e-4)


def test_attention_mask_combines_context_and_padding():
    mask = attention_mask(torch.tensor([5, 3]), 5, [1, 2])[:, 0] == 0
    query, key = 2, torch.arange(5)
    assert mask[0, query].tolist() == ((key >= 1) & (key <= 4)).tolist()
    assert mask[1, query].tolist() == [False, True, True, False, False]
    # Padded queries attend to themselves only (no empty softmax row).
    assert mask[1, 4].tolist() == [False, False, False, False, True]


def test_without_a_context_limit_the_mask_masks_keys_only():
    # (B, 1, 1, T') additive, what SDPA's memory-efficient kernel takes without copying it
    # into a (B, H, T', T') tensor; an utterance of no frames still has a key (no NaN row).
    mask = attention_mask(torch.tensor([5, 3, 0]), 5, [-1, -1], torch.bfloat16)
    assert mask.shape == (3, 1, 1, 5) and mask.dtype == torch.bfloat16
    assert (mask[:, 0, 0] == 0).tolist() == [
        [True] * 5,
        [True, True, True, False, False],
        [True, False, False, False, False],
    ]
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}
    assert mask.stride(-1) == 1 and all(stride % 16 == 0 for stride in mask.stride()[:-1])


def _bool_mask(lengths: torch.Tensor, max_length: int, context) -> torch.Tensor:
    """The encoder's mask before additive masks: (B, 1, T', T') bool, padding and context in
    one; padded queries attend to themselves."""
    left, right = context
    frames = torch.arange(max_length)
    offset = frames.view(1, -1) - frames.view(-1, 1)
    allowed = torch.ones(max_length, max_length, dtype=torch.bool)
    if left >= 0:
        allowed = allowed & (offset >= -left)
    if right >= 0:
        allowed = allowed & (offset <= right)
    valid = padding_mask(lengths, max_length)
    mask = allowed.unsqueeze(0) & valid.unsqueeze(1)
    return (mask | ((offset == 0).unsqueeze(0) & ~valid.unsqueeze(2))).unsqueeze(1)


@pytest.mark.parametrize("context", [[-1, -1], [4, 0], [3, 2], [-1, 0], [0, -1]])
def test_additive_masks_give_what_the_bool_mask_gave(context, monkeypatch):
    # Ragged batch with an utterance of no frames: outputs and every gradient as before.
    encoder = _encoder(attention_context_size=context, dropout=0.0).train()
    features, lengths = _features([97, 40, 13, 1])
    lengths[3] = 0
    results = []
    for mask_function in (
        attention_mask,
        lambda lengths, frames, context, *_: _bool_mask(lengths, frames, context),
    ):
        monkeypatch.setattr(encoder_module, "attention_mask", mask_function)
        encoder.zero_grad()
        inputs = features.clone().requires_grad_()
        encoder_out, _ = encoder(inputs, lengths)
        (
            encoder_out * torch.linspace(-1, 1, encoder_out.numel()).view_as(encoder_out)
        ).sum().backward()
        grads = [inputs.grad] + [p.grad.clone() for p in encoder.parameters()]
        results.append((encoder_out.detach(), grads))
    (additive, additive_grads), (boolean, boolean_grads) = results
    assert torch.isfinite(additive).all()
    torch.testing.assert_close(additive, boolean, atol=1e-6, rtol=1e-5)
    for new, old in zip(additive_grads, boolean_grads, strict=True):
        assert torch.isfinite(new).all()
        torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("context", "shape"), [([-1, -1], (3, 1, 1, 13)), ([4, 0], (3, 1, 13, 13))]
)
def test_every_layer_gets_one_additive_mask_in_the_query_dtype(context, shape, monkeypatch):
    # A bool mask, or one of another dtype, would be converted by SDPA at every layer (and
    # each copy kept for backward); under bf16 autocast the queries are bf16.
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, key, value, attn_mask=None, **options):
        seen.append((query.dtype, attn_mask))
        return sdpa(query, key, value, attn_mask=attn_mask, **options)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    encoder = _encoder(attention_context_size=context, num_layers=3)
    features, lengths = _features([50, 31, 9])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(features, lengths)
    assert len(seen) == 3
    masks = [mask for _, mask in seen]
    assert all(mask is masks[0] for mask in masks)
    assert masks[0].shape == shape and masks[0].dtype == seen[0][0] == torch.bfloat16


@pytest.mark.parametrize("context", [[-1, -1], [4, 0]])
def test_encoder_reads_no_device_value_on_the_host(context):
    encoder = _encoder(attention_context_size=context).train()
    features, lengths = _features([97, 40, 13, 64])
    with count_ops() as counts:
        encoder_out, _ = encoder(features, lengths)
        encoder_out.sum().backward()
    assert counts.host_reads == 0, counts.reads_by_kind


@pytest.mark.parametrize("context", [[-1, -1], [4, 0]])
def test_encoder_compiles_as_one_graph_equal_to_eager(context):
    # fullgraph=True raises at the first graph break; the "eager" backend runs the captured
    # graph as it is (no C++ compiler needed; graph breaks are decided before any backend).
    # Two ragged batches of other shapes run through the one dynamic-shape graph.
    torch._dynamo.reset()
    encoder = _encoder(attention_context_size=context, num_layers=1, dropout=0.0).train()
    compiled = torch.compile(encoder, fullgraph=True, backend="eager", dynamic=True)
    for lengths in ([97, 40, 13, 64], [33, 70, 5]):
        features, feature_lengths = _features(lengths)
        eager_inputs = features.clone().requires_grad_()
        compiled_inputs = features.clone().requires_grad_()
        eager_out, eager_lengths = encoder(eager_inputs, feature_lengths)
        compiled_out, compiled_lengths = compiled(compiled_inputs, feature_lengths)
        assert torch.equal(compiled_lengths, eager_lengths)
        torch.testing.assert_close(compiled_out, eager_out, atol=1e-5, rtol=1e-4)
        eager_out.square().sum().backward()
        compiled_out.square().sum().backward()
        torch.testing.assert_close(compiled_inputs.grad, eager_inputs.grad, atol=1e-5, rtol=1e-4)


def _affected(encoder: ConformerEncoder, features, lengths, frame: int, part) -> torch.Tensor:
    """Bool over encoder frames: does ``part(features)`` change when feature ``frame`` moves."""
    perturbed = features.clone()
    perturbed[:, frame] += 5.0
    with torch.no_grad():
        before, after = part(features, lengths), part(perturbed, lengths)
    return ((before - after).abs() > 1e-6).flatten(2).any(dim=2)[0]


@pytest.mark.parametrize("context", [[2, 1], [0, 0], [3, 0], [-1, 2], [1, -1]])
def test_attention_context_limits_what_a_frame_sees(context):
    # One block with a kernel-1 convolution: only attention mixes frames after subsampling.
    encoder = _encoder(num_layers=1, conv_kernel_size=1, attention_context_size=context)
    features, lengths = _features([120])
    left, right = context
    frames = -(-120 // 4)
    for feature_frame in (7, 40, 41, 42, 43, 90):
        subsampled = _affected(
            encoder, features, lengths, feature_frame, lambda f, n: encoder.subsampling(f, n)[0]
        )
        output = _affected(encoder, features, lengths, feature_frame, lambda f, n: encoder(f, n)[0])
        for query in range(frames):
            low = 0 if left < 0 else max(0, query - left)
            high = frames if right < 0 else query + right + 1
            inside = bool(subsampled[low:high].any())
            assert bool(output[query]) == inside, (feature_frame, query)


@pytest.mark.parametrize("factor", [4, 8])
def test_subsampling_reads_no_further_than_its_own_block(factor):
    encoder = _encoder(subsampling_factor=factor)
    features, lengths = _features([96])
    for feature_frame in (0, 17, 40, 41, 95):
        changed = _affected(
            encoder, features, lengths, feature_frame, lambda f, n: encoder.subsampling(f, n)[0]
        )
        # Encoder frame t' reads feature frames factor * t' -/+ (factor - 1).
        first = -(-(feature_frame - factor + 1) // factor)
        last = (feature_frame + factor - 1) // factor
        expected = [first <= frame <= last for frame in range(changed.numel())]
        assert changed.tolist() == expected, feature_frame


def test_causal_encoder_sees_no_future():
    encoder = _encoder(conv_kernel_size=15, causal_conv=True, attention_context_size=[-1, 0])
    features, lengths = _features([96])
    for feature_frame in (9, 40, 80, 95):
        changed = _affected(
            encoder, features, lengths, feature_frame, lambda f, n: encoder(f, n)[0]
        )
        first = feature_frame // 4  # the encoder frame whose block holds the feature frame
        assert not changed[:first].any()
        assert changed[first:].all()


def test_chunked_encoder_sees_no_future_past_the_chunk():
    # Chunks of 4 encoder frames (16 feature frames), causal convolutions: a feature frame
    # changes nothing before the chunk of the first encoder frame that reads it, and something
    # in that chunk (attention reads ahead to the chunk's end, no further).
    encoder = _encoder(
        conv_kernel_size=15,
        causal_conv=True,
        attention_context_size=[[2, 3], [-1, -1]],
        attention_context_style="chunked",
    )
    features, lengths = _features([96])
    for feature_frame in (9, 40, 70, 95):
        changed = _affected(
            encoder, features, lengths, feature_frame, lambda f, n: encoder(f, n)[0]
        )
        first = -(-(feature_frame - 3) // 4)  # the first encoder frame that reads it
        chunk_start = first // 4 * 4
        assert not changed[:chunk_start].any(), feature_frame
        assert changed[chunk_start : chunk_start + 4].any(), feature_frame


def test_symmetric_convolution_sees_the_future():
    # The same encoder with a symmetric convolution leaks future frames: the causal option matters.
    encoder = _encoder(conv_kernel_size=15, causal_conv=False, attention_context_size=[-1, 0])
    features, lengths = _features([96])
    changed = _affected(encoder, features, lengths, 80, lambda f, n: encoder(f, n)[0])
    assert changed[: 80 // 4].any()


def test_even_kernel_needs_causal_convolution():
    with pytest.raises(ValueError, match="conv_kernel_size=4"):
        _encoder(conv_kernel_size=4)
    _encoder(conv_kernel_size=4, causal_conv=True)
