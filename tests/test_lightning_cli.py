"""`rnnt fit|validate|test` as a user runs them: evaluation never rewrites the run's config and
never scores random weights without being asked; several test sets each score as they would
alone; log lines are printed once."""

from __future__ import annotations

import functools
import io
import json
import logging
from pathlib import Path

import pytest
import yaml

from rnnt.cli import main
from rnnt.lightning_cli import RankFilter, log_to_stderr
from tests.tiny import tiny_fit_config

# What `main` prints is read from capsys; Lightning's own handlers write aside (conftest).
pytestmark = pytest.mark.usefixtures("log_lines_aside")


@pytest.fixture(scope="module")
def trained_run(tiny_corpus, tmp_path_factory) -> Path:
    """A config file whose run folder holds a short `rnnt fit` (config.yaml, last.ckpt)."""
    root = tmp_path_factory.mktemp("run")
    config = tiny_fit_config(tiny_corpus, root, max_steps=2, limit_val_batches=1)
    config["data"].update(noise_path=None, max_batch_duration=4.0)
    config["model"]["max_symbols_per_frame"] = 1
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    return path


def _error_line(capsys) -> str:
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "test"])
def test_evaluation_leaves_the_runs_config_yaml_byte_identical(command, trained_run):
    run = trained_run.parent / "run"
    before = (run / "config.yaml").read_bytes()
    # Other values than the training's, as when evaluating with another config file.
    main([command, "--config", str(trained_run), "--ckpt_path", "last", "--seed_everything", "7"])
    assert (run / "config.yaml").read_bytes() == before
    evaluated = yaml.safe_load((run / f"config-{command}.yaml").read_text())
    assert evaluated["ckpt_path"] == "last" and evaluated["seed_everything"] == 7


@pytest.mark.parametrize("command", ["validate", "test"])
def test_evaluation_without_weights_is_refused_unless_asked(command, trained_run, capsys):
    with pytest.raises(SystemExit) as refused:
        main([command, "--config", str(trained_run)])
    assert refused.value.code == 2
    error = _error_line(capsys)
    assert error.startswith(f"rnnt {command}: error: no weights to {command}: give --ckpt_path")
    assert "--allow_untrained true" in error


def test_an_untrained_baseline_is_scored_when_asked_for(trained_run):
    main(["validate", "--config", str(trained_run), "--allow_untrained", "true"])


def test_evaluation_of_a_run_with_no_checkpoint_is_refused(trained_run, tmp_path, capsys):
    args = ["--config", str(trained_run), "--trainer.logger.init_args.name", "never-trained"]
    with pytest.raises(SystemExit) as refused:
        main(["validate", *args, "--ckpt_path", "last"])
    assert refused.value.code == 2
    assert "--ckpt_path last: no last.ckpt in " in _error_line(capsys)
    with pytest.raises(SystemExit):
        main(["test", *args, "--ckpt_path", "best"])
    assert "--ckpt_path best: only a `fit` knows its best checkpoint" in _error_line(capsys)


def _record(monkeypatch, cls, method: str) -> list:
    """What ``cls.method`` returns (``Trainer.test``: each set's figures) or is given
    (``log_metrics``: the metrics) from now on, in order."""
    recorded = []
    original = getattr(cls, method)

    @functools.wraps(original)  # (LightningCLI reads Trainer.test's parameters)
    def recording(self, *args, **kwargs):
        returned = original(self, *args, **kwargs)
        recorded.append(returned[0] if method == "test" else (args or [kwargs["metrics"]])[0])
        return returned

    monkeypatch.setattr(cls, method, recording)
    return recorded


def _small_set(tmp_path: Path, tiny_corpus: Path, split: str, lines: int, name: str) -> Path:
    # The first `lines` utterances of a split of the tiny corpus, as a manifest of its own.
    utterances = [json.loads(line) for line in (tiny_corpus / f"{split}.jsonl").open()][:lines]
    for utterance in utterances:
        utterance["audio_filepath"] = str(tiny_corpus / utterance["audio_filepath"])
    manifest = tmp_path / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(utterance) + "\n" for utterance in utterances))
    return manifest


def test_two_test_sets_score_each_as_it_scores_alone(
    trained_run, tiny_corpus, tmp_path, monkeypatch, capsys
):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    sets = {
        "test-clean": _small_set(tmp_path, tiny_corpus, "val", 2, "test-clean"),
        "test-other": _small_set(tmp_path, tiny_corpus, "test", 3, "test-other"),
    }
    results = _record(monkeypatch, Trainer, "test")
    args = ["test", "--config", str(trained_run), "--ckpt_path", "last", "--data.test_manifest"]
    # The second set is the one a state left over from the first would change.
    main([*args, str(sets["test-other"])])
    alone = results.pop()
    printed = capsys.readouterr().out
    assert "test_wer" in printed and "utterances" not in printed  # Lightning's table, as ever
    logged = _record(monkeypatch, TensorBoardLogger, "log_metrics")
    main([*args, f"[{sets['test-clean']}, {sets['test-other']}]"])
    assert len(results) == 2 and results[1] == alone  # exactly, loss and WER
    scored = dict(zip(sets, results, strict=True))
    assert logged[-1] == {
        f"test_{key}/{name}": scored[name][f"test_{key}"]
        for name in sets
        for key in ("wer", "loss")
    }
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("test set"))
    assert printed[header].split() == ["test", "set", "utterances", "words", "WER", "loss"]
    rows = {line.split()[0]: line.split() for line in printed[header + 1 :]}
    assert list(rows) == list(sets)
    for name, manifest in sets.items():
        references = [json.loads(line)["text"] for line in manifest.read_text().splitlines()]
        words = sum(len(text.split()) for text in references)
        wer = f"{100 * scored[name]['test_wer']:.2f}"
        assert rows[name][1:5] == [str(len(references)), str(words), wer, "%"], rows


def test_a_missing_test_set_is_one_line_naming_it_before_any_is_scored(
    trained_run, tiny_corpus, tmp_path, monkeypatch, capsys
):
    from lightning.pytorch import Trainer

    results = _record(monkeypatch, Trainer, "test")
    missing = tmp_path / "test-other.jsonl"
    sets = f"[{tiny_corpus / 'test.jsonl'}, {missing}]"
    with pytest.raises(SystemExit) as refused:
        main(
            ["test", "--config", str(trained_run), "--ckpt_path", "last"]
            + ["--data.test_manifest", sets]
        )
    assert refused.value.code == 2
    assert _error_line(capsys) == (
        f"rnnt test: error: --data.test_manifest: {missing} does not exist (no test set was scored)"
    )
    assert results == []


def _log_lines(rank: int, monkeypatch) -> list[str]:
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank, raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RankFilter())
    for name in ("rnnt.data.records", "rnnt.data.dataset"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [handler])
        monkeypatch.setattr(logger, "propagate", False)
    logging.getLogger("rnnt.data.records").warning("train.jsonl: kept 28 utterances")
    logging.getLogger("rnnt.data.dataset").warning("a.flac: failed to load")
    return stream.getvalue().splitlines()


def test_under_ddp_a_line_every_rank_would_print_alike_is_printed_once(monkeypatch):
    # Every rank reads the same manifests: their summary is rank 0's to print. A line about
    # one rank's own batch is printed wherever it happens, marked with the rank.
    assert _log_lines(0, monkeypatch) == [
        "train.jsonl: kept 28 utterances",
        "a.flac: failed to load",
    ]
    assert _log_lines(1, monkeypatch) == ["[rank 1] a.flac: failed to load"]


def test_log_to_stderr_adds_one_handler_once(monkeypatch):
    logger = logging.getLogger("rnnt")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    log_to_stderr()
    log_to_stderr()
    assert len(logger.handlers) == 1
    assert [type(f) for f in logger.handlers[0].filters] == [RankFilter]


@pytest.fixture
def matmul_precision():
    """Restores torch's process-wide float32 matmul precision after the test."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.usefixtures("matmul_precision")
@pytest.mark.parametrize(
    ("device", "capability", "tf32"),
    [
        ("cpu", None, False),
        ("cuda:0", (7, 5), False),
        ("cuda:0", (8, 0), True),
        ("cuda", (9, 0), True),
    ],
)
def test_float32_matmuls_use_tf32_on_gpus_that_have_it(device, capability, tf32, monkeypatch):
    import torch

    from rnnt.constants import FLOAT32_MATMUL_PRECISION
    from rnnt.lightning_cli import use_tensor_cores

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert use_tensor_cores(torch.device(device)) is tf32
    expected = FLOAT32_MATMUL_PRECISION if tf32 else "highest"
    assert torch.get_float32_matmul_precision() == expected
    assert torch.backends.cuda.matmul.allow_tf32 is tf32


@pytest.mark.usefixtures("matmul_precision")
def test_a_precision_the_program_chose_is_kept(monkeypatch):
    import torch

    from rnnt.lightning_cli import use_tensor_cores

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    torch.set_float32_matmul_precision("medium")
    assert use_tensor_cores(torch.device("cuda:0"))
    assert torch.get_float32_matmul_precision() == "medium"


def test_every_run_decides_tf32_for_the_trainers_device(tiny_corpus, tmp_path, monkeypatch):
    import torch

    from rnnt import lightning_cli

    devices = []
    monkeypatch.setattr(lightning_cli, "use_tensor_cores", devices.append)
    config = tiny_fit_config(tiny_corpus, tmp_path)
    lightning_cli.make_cli(config, run=False)
    assert devices == [torch.device("cpu")]


def test_fit_with_model_compile_trains_the_encoder_compiled_in_one_graph(
    tiny_corpus, tmp_path, monkeypatch
):
    # Inductor's code generation is torch's to test (and needs a C++ compiler on a CPU); what
    # is ours: the flag reaches the module, the encoder runs compiled in training and
    # validation, whole (one graph each, no graph break), and the checkpoint loads without
    # the compile wrapper. A backend that records dynamo's graphs and runs them as they are.
    import torch
    import torch.nn.functional as F
    from torch._dynamo.utils import counters

    from rnnt.checkpoint import load_checkpoint
    from tests.tiny import TINY_MODEL

    graphs = []

    def recording_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr("rnnt.train.COMPILE_BACKEND", recording_backend)
    torch._dynamo.reset()
    counters.clear()
    config = tiny_fit_config(tiny_corpus, tmp_path, max_steps=2, limit_val_batches=1)
    config["data"].update(noise_path=None, max_batch_duration=4.0)
    config["model"]["max_symbols_per_frame"] = 1
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path), "--model.compile", "true"])
    torch._dynamo.reset()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert len(graphs) >= 2  # training and evaluation (dropout on and off)
    for graph in graphs:
        attention = [n for n in graph.graph.nodes if n.target is F.scaled_dot_product_attention]
        assert len(attention) == TINY_MODEL["num_layers"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state_dict = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert not [key for key in state_dict if "_orig_mod" in key]
    model, _ = load_checkpoint(last)  # a plain Transducer, strict about parameter names
    assert not hasattr(model.encoder, "_orig_mod")
