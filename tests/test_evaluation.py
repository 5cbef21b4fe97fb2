"""Multi-lookahead training end to end: each batch draws its context, validation and testing
score every listed context (rnnt.evaluation), and the checkpoint streams at each."""

from __future__ import annotations

import pytest
import torch

from rnnt.checkpoint import load_checkpoint
from rnnt.lightning_cli import make_cli
from rnnt.models.contexts import ContextSampler
from rnnt.streaming import StreamingSession
from tests.tiny import tiny_fit_config

CONTEXTS = [[2, 1], [2, 3], [-1, -1]]
PROBABILITIES = [0.5, 0.25, 0.25]
STEPS = 6


@pytest.fixture(scope="module")
def multi_context_run(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_context")
    config = tiny_fit_config(
        tiny_corpus, root, max_steps=STEPS, val_check_interval=3, limit_val_batches=2
    )
    config["model"].update(
        attention_context_size=CONTEXTS,
        attention_context_style="chunked",
        attention_context_probabilities=PROBABILITIES,
        causal_conv=True,
    )
    cli = make_cli(config, run=False, root_dir=str(root))
    module = cli.model
    drawn, steps = [], []
    encode, training_step = module.model.encode, module.training_step

    def recording_encode(audio, lengths, max_audio_length=None, attention_context=None):
        if module.training:
            drawn.append(attention_context)
        return encode(audio, lengths, max_audio_length, attention_context)

    def recording_step(batch, batch_idx):
        steps.append((module.global_step, batch_idx))
        return training_step(batch, batch_idx)

    module.model.encode = recording_encode
    module.training_step = recording_step
    cli.trainer.fit(module, datamodule=cli.datamodule)
    tested = cli.trainer.test(module, datamodule=cli.datamodule, ckpt_path="last")[0]
    return cli.trainer, list(zip(steps, drawn, strict=True)), tested


def test_each_training_batch_uses_the_context_its_step_draws(multi_context_run):
    _, drawn, _ = multi_context_run
    sampler = ContextSampler(CONTEXTS, PROBABILITIES)
    assert [step for (step, _), _ in drawn] == list(range(STEPS))
    assert all(context == sampler.draw(*step) for step, context in drawn)


def test_validation_and_test_report_the_wer_of_every_listed_context(multi_context_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _, tested = multi_context_run
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    names = ["2_1", "2_3", "full"]
    assert {f"val_wer_by_context/{name}" for name in names} <= scalars
    assert {"val_wer", "val_loss"} <= scalars
    assert {f"test_wer_by_context/{name}" for name in names} <= set(tested)
    # The default context (the first listed) is the one val_wer and test_wer score.
    assert tested["test_wer"] == pytest.approx(tested["test_wer_by_context/2_1"])


def test_the_checkpoint_streams_at_each_listed_chunk(multi_context_run):
    trainer, _, _ = multi_context_run
    model, _ = load_checkpoint(trainer.checkpoint_callback.last_model_path)
    assert model.encoder.attention_contexts == CONTEXTS and model.encoder.chunked
    for chunk_ms, context in ((80, [2, 1]), (160, [2, 3]), (320, [2, 3])):
        assert StreamingSession(model, chunk_ms=chunk_ms).context == context
    with torch.inference_mode():  # the full context is there for offline use
        audio = torch.zeros(1, 16_000)
        model.encode(audio, torch.tensor([16_000]), attention_context=[-1, -1])
