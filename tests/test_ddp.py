"""`rnnt fit|validate` under DDP on the CPU (gloo, two processes): the multi-GPU code path.

One scenario serves most tests: a two-rank run whose rank 1 alone gets SIGTERM in its second
epoch, then resumed with `--ckpt_path last` to the end; rank 1's loss is NaN at one step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rnnt.lightning_cli import make_cli
from tests.tiny import tiny_fit_config

REPO = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 240
NAN_STEP = 2  # rank 1's loss is NaN at this global step
STOP_STEP = 8  # rank 1 gets SIGTERM at the start of this global step (the second epoch)


def _rnnt(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnt", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"rnnt did not finish in {PROCESS_TIMEOUT_S} s (a hang?):\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def _records(folder: Path, rank: int, split: str = "train") -> list[dict]:
    path = folder / f"batches-rank{rank}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [record for record in map(json.loads, lines) if record["split"] == split]


def _ids(manifest: Path) -> set[str]:
    return {
        f"{manifest.name}:{line}" for line in range(1, len(manifest.read_text().splitlines()) + 1)
    }


def _short_val_manifest(corpus: Path, folder: Path, lines: int = 5) -> Path:
    """The first ``lines`` validation utterances (absolute paths): with one utterance per batch
    and two ranks, lhotse gives rank 1 a copy of one utterance in the last round."""
    records = [json.loads(line) for line in (corpus / "val.jsonl").read_text().splitlines()]
    path = folder / "val5.jsonl"
    with path.open("w") as file:
        for record in records[:lines]:
            record["audio_filepath"] = str(corpus / record["audio_filepath"])
            file.write(json.dumps(record) + "\n")
    return path


def _ddp_config(corpus: Path, root: Path, *callbacks: dict) -> dict:
    config = tiny_fit_config(corpus, root, max_epochs=2, devices=2, strategy="ddp")
    config["data"].update(noise_path=None, val_manifest=str(_short_val_manifest(corpus, root)))
    config["model"]["max_symbols_per_frame"] = 1  # quick greedy decoding of an untrained model
    config["trainer"]["callbacks"] = list(callbacks)
    return config


def _probe(name: str, **init_args) -> dict:
    return {"class_path": f"tests.probes.{name}", "init_args": init_args}


@pytest.fixture(scope="module")
def stopped_and_resumed(tiny_corpus, tmp_path_factory) -> dict:
    """Runs the scenario once; returns paths, outputs and rank-0 process ids of both runs."""
    root = tmp_path_factory.mktemp("ddp")
    probe = root / "probe"
    probes = [
        _probe("BatchRecorder", out_dir=str(probe)),
        _probe("MetricsRecorder", out_dir=str(probe)),
        _probe("NanLossOnRank", rank=1, steps=[NAN_STEP]),
    ]
    config_path = root / "fit.yaml"
    stop = _probe("SendSignal", rank=1, train_step=STOP_STEP)
    config_path.write_text(yaml.safe_dump(_ddp_config(tiny_corpus, root, *probes, stop)))
    first = _rnnt("fit", "--config", str(config_path))
    first_output = _finish(first)
    stopped = torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)

    config_path.write_text(yaml.safe_dump(_ddp_config(tiny_corpus, root, *probes)))
    second = _rnnt("fit", "--config", str(config_path), "--ckpt_path", "last")
    second_output = _finish(second)
    return {
        "root": root,
        "probe": probe,
        "outputs": (first_output, second_output),
        "pids": (first.pid, second.pid),
        "stopped": stopped,
        "last": root / "run" / "checkpoints" / "last.ckpt",
    }


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_batch_with_exit_0(
    stopped_and_resumed,
):
    first_output = stopped_and_resumed["outputs"][0]
    last = stopped_and_resumed["last"]
    # Exit status 0 was checked by _finish. Rank 0 did not get the signal, yet saved.
    assert re.search(
        rf"a stop signal reached another rank: stopped after training batch \d+ and saved {last}",
        first_output,
    )
    assert "--ckpt_path last" in first_output
    assert stopped_and_resumed["stopped"]["global_step"] == STOP_STEP + 1
    final = torch.load(last, weights_only=True)
    assert final["global_step"] > STOP_STEP + 1 and final["epoch"] == 1


def test_each_rank_trains_a_disjoint_share_of_every_epoch_across_the_resume(
    stopped_and_resumed, tiny_corpus
):
    probe = stopped_and_resumed["probe"]
    train_set = _ids(tiny_corpus / "train.jsonl")
    for epoch in (0, 1):
        shares, steps = [], []
        for rank in (0, 1):
            records = [r for r in _records(probe, rank) if r["epoch"] == epoch]
            ids = [i for r in records for i in r["ids"]]
            assert len(ids) == len(set(ids)), f"epoch {epoch}: rank {rank} repeated a batch"
            # lhotse may give a rank a marked copy in the last round (at most one per epoch).
            assert sum(i.endswith("_dup0") for i in ids) <= 1
            shares.append({i for i in ids if "_dup" not in i})
            steps.append(len(records))
        assert not shares[0] & shares[1], f"epoch {epoch}: the ranks' shares overlap"
        # Every utterance once per epoch: the stop and resume neither repeated nor lost any.
        assert shares[0] | shares[1] == train_set, f"epoch {epoch}: utterances missing"
        assert steps[0] == steps[1]  # the same number of steps on every rank


def test_only_rank_0_writes_checkpoints_and_tensorboard_events(stopped_and_resumed):
    run = stopped_and_resumed["root"] / "run"
    events = sorted(run.glob("events.out.tfevents.*"))
    writers = {int(path.name.split(".")[-2]) for path in events}
    assert writers == set(stopped_and_resumed["pids"])  # rank 0 of each run, no other process
    names = {path.name for path in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in names
    assert all(re.fullmatch(r"rnnt-0[01]-\d+\.\d\d\.ckpt|last\.ckpt", name) for name in names)
    assert {path.name for path in run.iterdir()} == {
        "checkpoints",
        "config.yaml",
        "hparams.yaml",
        *(path.name for path in events),
    }


def test_a_nan_on_one_rank_skips_that_step_on_every_rank(stopped_and_resumed):
    first_output = stopped_and_resumed["outputs"][0]
    assert f"step {NAN_STEP}: non-finite loss (nan)" in first_output  # rank 1
    assert f"step {NAN_STEP}: non-finite loss (on another rank" in first_output  # rank 0
    final = torch.load(stopped_and_resumed["last"], weights_only=True)
    adam_steps = {int(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {final["global_step"] - 1}  # one update skipped, then training went on


def test_validation_metrics_are_the_same_on_one_and_two_ranks(
    stopped_and_resumed, tiny_corpus, tmp_path
):
    """The 2-rank split gives rank 1 a copy of one utterance (lhotse pads the last round);
    WER and loss must still be those of the whole validation set, counted once."""
    checkpoint = str(stopped_and_resumed["last"])
    probe = tmp_path / "probe"
    config = _ddp_config(
        tiny_corpus,
        tmp_path,
        _probe("BatchRecorder", out_dir=str(probe)),
        _probe("MetricsRecorder", out_dir=str(probe)),
        _probe("HalfRightDecoder"),
    )
    config["data"]["batch_size"] = 1
    config_path = tmp_path / "validate.yaml"
    config_path.write_text(yaml.safe_dump(config))
    _finish(_rnnt("validate", "--config", str(config_path), "--ckpt_path", checkpoint))
    two_ranks = json.loads((probe / "metrics-rank0.jsonl").read_text().splitlines()[-1])

    val_ids = [[i for r in _records(probe, rank, "val") for i in r["ids"]] for rank in (0, 1)]
    assert any(i.endswith("_dup0") for ids in val_ids for i in ids)  # the padding happened
    assert sorted(i for ids in val_ids for i in ids if "_dup" not in i) == sorted(
        _ids(Path(config["data"]["val_manifest"]))
    )

    config["trainer"].update(devices=1, strategy="auto", callbacks=[_probe("HalfRightDecoder")])
    cli = make_cli(config, run=False, root_dir=str(tmp_path / "one"))
    (one_rank,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    assert 0 < one_rank["val_wer"] < 1  # each utterance has its own WER: a sensitive figure
    assert two_ranks["val_wer"] == pytest.approx(one_rank["val_wer"], abs=1e-6)
    assert two_ranks["val_loss"] == pytest.approx(one_rank["val_loss"], rel=1e-5)


# --- the DDP parts of the data pipeline and the step, without processes -------------------------
def test_a_failed_batch_is_stood_in_for_and_not_counted_under_ddp(tmp_path):
    from lhotse import CutSet

    from rnnt.data.dataset import TransducerDataset, is_sampler_copy
    from rnnt.data.records import load_audio_records
    from rnnt.data.tokenizer import Tokenizer
    from tests.test_cuts import make_corpus

    corpus = make_corpus(tmp_path / "corpus")
    records = load_audio_records(corpus / "train.jsonl")
    dataset = TransducerDataset(Tokenizer.load(corpus / "tokenizer.model"), world_size=2)
    (corpus / records[0].path).write_bytes(b"garbage" * 100)
    # No good batch yet on this worker: a short silence stands in, so the rank still steps.
    placeholder = dataset[CutSet([records[0].to_cut()])]
    assert placeholder["counted"].tolist() == [False] and placeholder["audio"].abs().sum() == 0
    good = dataset[CutSet([records[1].to_cut(), records[2].to_cut()])]
    assert good["counted"].tolist() == [True, True]
    repeated = dataset[CutSet([records[0].to_cut()])]
    assert repeated["ids"] == good["ids"] and repeated["counted"].tolist() == [False, False]
    # lhotse's end-of-data copies for DDP are marked "_dup<N>": the sampler's padding.
    assert is_sampler_copy("val.jsonl:3_dup0") and not is_sampler_copy("val.jsonl:3")
