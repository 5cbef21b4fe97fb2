"""Hotword biasing on a trained model: recall of names it never heard, and WER where there are none.

The demo model (``rnnt demo``) learnt a few hundred words; the person names in ``NAMES`` are
none of them (every word of every name is checked against ``--train-manifest``). Each name is
put in each of ``TEMPLATES``, carrier sentences of the demo grammar, and spoken by the demo's
eSpeak NG engine as the corpus does (``rnnt/corpus/render.py``): a random training voice and
speaking settings, trimmed, resampled to 16 kHz, a random peak level and silence margins, 16-bit
samples; all drawn from ``--seed``, in memory. Those call sentences, and the real test split
``--manifest`` (no names in it), are encoded once and decoded, for each of ``--beam-sizes``,
by beam search without hotwords (greedy search at beam 1, as ``rnnt transcribe``) and with a
graph of all the names (one phrase each, ``HotwordGraph.from_phrases``) at each ``--boosts``
value (per piece, as ``rnnt transcribe --hotwords``; at beam 1 that is beam search keeping one
hypothesis).

Figures, per decoder (``beamK`` and ``beamK_hotwords_BOOST``):

- ``name_recall``: % of call sentences whose hypothesis holds the name's words in a row;
- ``call_wer`` and ``test_wer``: word error rate (%) of the call sentences and of the test
  split (real references);
- ``test_wer_change``: ``test_wer`` minus that of the same beam without hotwords; the guard is
  that it stays within ``WER_GUARD`` (0.5 absolute): ``boosts_within_guard``;
- ``test_name_insertions``: test hypotheses holding a name (false alarms: it has none).

``boost_needed``: per call sentence, the boost per piece at which the reference, name included,
would outscore the widest beam's unbiased hypothesis (log-likelihoods over all alignments,
``log_likelihoods``); ``reachable_recall`` is the share reachable at each boost by an exact
search, an upper bound for ``name_recall`` that separates what the model hears from what the
search prunes. ``test_timing``: CPU seconds of the search over the test split (encoder
excluded) without and with the graph at ``HOTWORD_BOOST``, shortest of ``--repeats``, taken in
turn; CPU rather than wall time, which other processes sway more.

Measured with the full-context demo model (``/tmp/avg15.ckpt``: 2.43 M parameters, 40 pieces,
so a name is 9.7 pieces on average), 130 call sentences (26 names x 5 templates, 243 s, 55
voices) and the test split (300 utterances, 793 s), on 1 thread of the shared 2-core CPU
(load 4-6) in 7.5 min. Recall, WER and name insertions (in the test split)::

    beam  boost  recall  call WER  test WER  change  names in test
      1     -     0.0 %   57.5 %   13.70 %      -       0    (greedy search)
      1    0.5    0.0     57.0     14.24    +0.54       0
      1    1.0    0.0     58.0     16.69    +2.99       0
      1    1.5    0.0     65.5     22.00    +8.30       0
      1    3.0    1.5     91.6     67.48   +53.78       4
      4     -     0.0     54.8     11.61      -         0
      4    0.5    0.0     55.8     11.66    +0.05       0
      4    1.0    1.5     52.9     12.52    +0.91       1
      4    1.5    3.8     53.8     13.47    +1.86       2
      4    2.0    5.4     56.0     18.68    +7.07       3
      4    3.0   12.3     80.4     38.19   +26.58      39
      8     -     0.0     54.3     11.61      -         0
      8    0.5    0.0     53.2     10.98    -0.63       0
      8    1.0    1.5     54.6     11.79    +0.18       1
      8    1.5    4.6     53.4     11.88    +0.27       2
      8    2.0   10.8     52.2     12.74    +1.13       6
      8    3.0   17.7     64.0     25.67   +14.06      52

(beam 1 at 2.0: 0.0 % recall, +23.26.) The model hardly hears names it never learnt: the median
name needs 3.24 per piece (p10 1.91, p90 5.12; ~31 nats a name) to beat its best guess ("call
jessica" is "call destroy"), so an exact search would recall 3.8 / 13.8 / 38.5 % at 1.5 / 2 /
3. What the sweep measures well is the cost: a partial match's pending bonus lifts hypotheses
into a phrase's first pieces (with 40 pieces, ``▁`` and a letter or two begin many words) and
pushes the right ones out of a narrow beam; the bonus is taken back later, the lost hypotheses
are not. Beam 1 pays most, beam 8 stays within the guard up to 1.5. Search CPU time on the test
split without / with the graph at 1.5: beam 4 8.2 / 7.3 s, beam 8 9.1 / 9.7 s (equal within
the load's noise), beam 1 1.1 s (greedy) / 4.8 s; building the graph (215 states) takes 2 ms.

    python benchmarks/hotwords.py --checkpoint /tmp/avg15.ckpt --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.text import word_error_rate

from rnnt.constants import (
    BEAM_SIZE,
    DEMO_PEAK_DBFS_RANGE,
    DEMO_SILENCE_MARGIN_S,
    HOTWORD_BOOST,
    SAMPLE_RATE,
    SEED,
    TRANSCRIBE_BATCH_SECONDS_CPU,
)
from rnnt.corpus.grammar import spoken_form
from rnnt.corpus.render import speak
from rnnt.corpus.voices import draw_espeak_voice
from rnnt.data.tokenizer import Tokenizer, normalize_text
from rnnt.decoding import beam_search, greedy_search
from rnnt.hotwords import HotwordGraph
from rnnt.loss import fused_rnnt_loss
from rnnt.models.transducer import Transducer
from rnnt.transcribe_audio import AudioItem, batch_by_duration, load_audio

# Common English names, none of whose words is in the demo's training transcripts; the last
# eight are first and last names. No name's words hold another name, so a call sentence holds
# exactly one (tests/test_hotwords_benchmark.py).
NAMES = (
    "jessica",
    "matthew",
    "andrew",
    "joseph",
    "elizabeth",
    "jennifer",
    "margaret",
    "kevin",
    "brian",
    "edward",
    "rebecca",
    "victoria",
    "natalie",
    "benjamin",
    "samuel",
    "patrick",
    "rachel",
    "fiona",
    "harriet collins",
    "nathan parker",
    "susan mitchell",
    "gregory evans",
    "amelia turner",
    "vincent morgan",
    "isabella carter",
    "dylan stewart",
)
# Carriers from the demo grammar (rnnt/corpus/grammar.py), so every other word is known.
TEMPLATES = (
    "call {name}",
    "send a message to {name}",
    "did {name} call",
    "tell {name} i will be late",
    "cancel my meeting with {name}",
)
BOOSTS = (0.5, 1.0, 1.5, 2.0, 3.0)
BEAM_SIZES = (1, BEAM_SIZE, 2 * BEAM_SIZE)  # 1: greedy search without hotwords
WER_GUARD = 0.5  # most test-WER increase (absolute %) a boost may cost
THREADS = 1
REPEATS = 3
CHECKPOINT = Path("runs/demo/checkpoints/last.ckpt")
DEMO_DATA = Path("demo/data")


def check_names_unseen(names: tuple[str, ...], train_manifest: Path) -> None:
    """Raise ``SystemExit`` naming ``FILE:LINE`` if a word of a name is in a training transcript."""
    words = {word: name for name in names for word in name.split()}
    with open(train_manifest, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            seen = sorted(set(normalize_text(json.loads(line)["text"]).split()) & words.keys())
            if seen:
                raise SystemExit(
                    f"{train_manifest}:{number}: the training text has {seen[0]!r} (of the name "
                    f"{words[seen[0]]!r}); the benchmark needs names the model never heard: "
                    "replace it in NAMES"
                )


def call_sentences(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(sentence, name)`` for every name in every template, template by template."""
    return [(template.format(name=name), name) for template in TEMPLATES for name in names]


def synthesize(texts: list[str], seed: int) -> tuple[list[torch.Tensor], list[str]]:
    """Waveforms ``(S,)`` float32 at 16 kHz of ``texts``, and their eSpeak voice names.

    Each text gets a random training voice and settings, margins and peak level, drawn from
    its own generator ``[seed, index]``, and is rounded to 16-bit samples, as the corpus's FLAC.
    """
    waveforms, voices = [], []
    for index, text in enumerate(texts):
        rng = np.random.default_rng([seed, index])
        voice = draw_espeak_voice(rng, heldout=False)
        margins = rng.uniform(*DEMO_SILENCE_MARGIN_S, size=2)
        peak_dbfs = rng.uniform(*DEMO_PEAK_DBFS_RANGE)
        speech = speak(spoken_form(text), voice, int(rng.integers(2**31 - 1)))
        if speech.size == 0:
            raise RuntimeError(f"eSpeak NG made no audio for {text!r} with {voice}")
        speech = speech * 10.0 ** (peak_dbfs / 20.0) / np.abs(speech).max()
        lead, trail = (round(margin * SAMPLE_RATE) for margin in margins)
        audio = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
        waveforms.append(torch.from_numpy(np.round(audio * 32767.0).astype(np.float32) / 32768.0))
        voices.append(voice.name)
    return waveforms, voices


@torch.inference_mode()
def encode(
    model: Transducer, waveforms: list[torch.Tensor], batch_seconds: float
) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Batches of ``(indices, encoder_out (B, T', D), encoder_lengths (B,))``, by duration."""
    durations = [w.numel() / SAMPLE_RATE for w in waveforms]
    batches = []
    for indices in batch_by_duration(durations, batch_seconds):
        lengths = torch.tensor([waveforms[i].numel() for i in indices])
        audio = torch.zeros(len(indices), int(lengths.max()))
        for row, index in enumerate(indices):
            audio[row, : lengths[row]] = waveforms[index]
        batches.append((indices, *model.encode(audio, lengths)))
    return batches


def decode(
    model: Transducer,
    tokenizer: Tokenizer,
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    beam_size: int,
    graph: HotwordGraph | None,
) -> tuple[list[str], float]:
    """Hypotheses in input order, and the CPU seconds
    of the search (this process's, all threads: less swayed by other processes than wall time).
    Greedy search when ``beam_size`` is 1 and there is no ``graph``, as ``transcribe_ids``."""
    texts: dict[int, str] = {}
    started = time.process_time()
    for indices, encoder_out, encoder_lengths in batches:
        if beam_size == 1 and graph is None:
            ids = greedy_search(model, encoder_out, encoder_lengths)
        else:
            ids = beam_search(model, encoder_out, encoder_lengths, beam_size, hotwords=graph)
        texts.update(zip(indices, map(tokenizer.decode, ids), strict=True))
    return [texts[i] for i in sorted(texts)], time.process_time() - started


@torch.inference_mode()
def log_likelihoods(
    model: Transducer,
    tokenizer: Tokenizer,
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    texts: list[str],
) -> list[float]:
    """``log P(texts[i] | audio i)`` in nats, summed over all alignments (the negative
    transducer loss), of every utterance of ``batches``, in input order."""
    scores: dict[int, float] = {}
    for indices, encoder_out, encoder_lengths in batches:
        ids = [tokenizer.encode_normalized(texts[i]) for i in indices]
        target_lengths = torch.tensor([len(row) for row in ids])
        targets = torch.ones(len(ids), max(1, int(target_lengths.max())), dtype=torch.int64)
        for row, tokens in enumerate(ids):
            targets[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        losses = fused_rnnt_loss(
            model.joiner.encoder_proj(encoder_out),
            model.joiner.predictor_proj(model.decoder(targets, target_lengths)),
            model.joiner.output.weight,
            model.joiner.output.bias,
            targets,
            encoder_lengths,
            target_lengths,
            blank=model.config.blank_id,
            activation=model.joiner.activation,
            reduction="none",
        )
        scores.update(zip(indices, (-losses).tolist(), strict=True))
    return [scores[i] for i in sorted(scores)]


def boost_needed(
    model: Transducer,
    tokenizer: Tokenizer,
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    calls: list[tuple[str, str]],
    hypotheses: list[str],
) -> list[float]:
    """Per call sentence, the per-token boost at which its reference (name included) would
    outscore the unbiased best hypothesis: ``(log P(hyp) - log P(ref)) / name tokens``, or 0.

    An exact search would then find the name; what beam search finds below that is lost to
    pruning, what needs more is beyond what the model hears."""
    references = log_likelihoods(model, tokenizer, batches, [text for text, _ in calls])
    best = log_likelihoods(model, tokenizer, batches, hypotheses)
    return [
        max(0.0, hyp - ref) / len(tokenizer.encode_normalized(name))
        for (_, name), ref, hyp in zip(calls, references, best, strict=True)
    ]


def time_biasing(
    model: Transducer,
    tokenizer: Tokenizer,
    batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    beam_size: int,
    graph: HotwordGraph,
    repeats: int,
) -> dict:
    """Beam-search CPU seconds over ``batches`` without and with ``graph``, each the shortest
    of ``repeats`` runs, taken in turn so that both see the same machine load."""
    plain, biased = [], []
    for _ in range(repeats):
        plain.append(decode(model, tokenizer, batches, beam_size, None)[1])
        biased.append(decode(model, tokenizer, batches, beam_size, graph)[1])
    return {
        "beam_cpu_s": round(min(plain), 2),
        "beam_hotwords_cpu_s": round(min(biased), 2),
        "ratio": round(min(biased) / min(plain), 3),
    }


def contains(hypothesis: str, phrase: str) -> bool:
    """Whether the words of ``phrase`` appear in a row in ``hypothesis``."""
    return f" {phrase} " in f" {hypothesis} "


def wer_percent(hypotheses: list[str], references: list[str]) -> float:
    return round(100.0 * float(word_error_rate(hypotheses, references)), 2)


def score(
    calls: list[tuple[str, str]],
    call_hypotheses: list[str],
    test_references: list[str],
    test_hypotheses: list[str],
) -> dict:
    """Recall, WERs and false alarms of one decoder's hypotheses."""
    recalled = sum(contains(h, name) for (_, name), h in zip(calls, call_hypotheses, strict=True))
    inserted = sum(any(contains(h, name) for name in NAMES) for h in test_hypotheses)
    return {
        "name_recall": round(100.0 * recalled / len(calls), 1),
        "call_wer": wer_percent(call_hypotheses, [text for text, _ in calls]),
        "test_wer": wer_percent(test_hypotheses, test_references),
        "test_name_insertions": inserted,
    }


def _recall_then_wer(figures: dict) -> tuple[float, float]:
    return figures["name_recall"], -figures["test_wer_change"]


def _quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        f"p{q}": round(ordered[min(len(ordered) - 1, q * len(ordered) // 100)], 2)
        for q in (10, 25, 50, 75, 90)
    }


def sweep(
    model: Transducer,
    tokenizer: Tokenizer,
    calls: list[tuple[str, str]],
    call_batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    test_batches: list[tuple[list[int], torch.Tensor, torch.Tensor]],
    test_references: list[str],
    beam_size: int,
    boosts: list[float],
) -> tuple[dict, dict[str, list[str]]]:
    """Figures of beam search of ``beam_size`` without hotwords and with them at each boost,
    and the call hypotheses of each; ``test_wer_change`` is against the unbiased search."""
    figures: dict = {}
    hypotheses: dict[str, list[str]] = {}
    for boost in [None, *boosts]:
        name = f"beam{beam_size}" + ("" if boost is None else f"_hotwords_{boost:g}")
        graph = None
        figures[name] = {}
        if boost is not None:
            build_started = time.perf_counter()
            graph = HotwordGraph.from_phrases(tokenizer, NAMES, boost=boost)
            figures[name]["graph_build_s"] = round(time.perf_counter() - build_started, 4)
            figures[name]["graph_states"] = graph.num_states
        hypotheses[name], _ = decode(model, tokenizer, call_batches, beam_size, graph)
        test_hypotheses, _ = decode(model, tokenizer, test_batches, beam_size, graph)
        figures[name].update(score(calls, hypotheses[name], test_references, test_hypotheses))
    baseline = figures[f"beam{beam_size}"]["test_wer"]
    for entry in figures.values():
        entry["test_wer_change"] = round(entry["test_wer"] - baseline, 2)
    return figures, hypotheses


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--manifest", type=Path, default=DEMO_DATA / "test.jsonl")
    parser.add_argument("--train-manifest", type=Path, default=DEMO_DATA / "train.jsonl")
    parser.add_argument("--boosts", type=float, nargs="+", default=list(BOOSTS))
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=list(BEAM_SIZES))
    parser.add_argument("--batch-seconds", type=float, default=TRANSCRIBE_BATCH_SECONDS_CPU)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timings: shortest of N")
    parser.add_argument("--examples", type=int, default=6, help="call hypotheses to show")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from rnnt.checkpoint import load_checkpoint
    from rnnt.data.manifest import read_manifest

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    check_names_unseen(NAMES, args.train_manifest)
    model, tokenizer = load_checkpoint(args.checkpoint, "cpu")
    calls = call_sentences(NAMES)
    call_audio, voices = synthesize([text for text, _ in calls], args.seed)
    utterances = read_manifest(args.manifest)
    test_audio = [load_audio(AudioItem(u.audio_filepath, u.offset, u.duration)) for u in utterances]
    test_references = [normalize_text(u.text) for u in utterances]
    encode_started = time.perf_counter()
    call_batches = encode(model, call_audio, args.batch_seconds)
    test_batches = encode(model, test_audio, args.batch_seconds)
    encode_s = time.perf_counter() - encode_started
    name_tokens = [len(tokenizer.encode_normalized(name)) for name in NAMES]
    result: dict = {
        "device": "cpu",
        "threads": args.threads,
        "load_average_1min_before": load_before,
        "checkpoint": str(args.checkpoint),
        "parameters": model.num_parameters(),
        "num_classes": tokenizer.num_classes,
        "names": len(NAMES),
        "name_tokens_mean": round(sum(name_tokens) / len(NAMES), 1),
        "call_sentences": len(calls),
        "call_audio_s": round(sum(w.numel() for w in call_audio) / SAMPLE_RATE, 1),
        "call_voices": len(set(voices)),
        "test_manifest": str(args.manifest),
        "test_utterances": len(utterances),
        "test_audio_s": round(sum(w.numel() for w in test_audio) / SAMPLE_RATE, 1),
        "encode_s": round(encode_s, 1),
        "wer_guard": WER_GUARD,
    }
    decoders: dict = {}
    every = max(1, len(calls) // max(args.examples, 1))
    examples = {"references": [text for text, _ in calls][::every]}
    within_guard: dict[str, list[float]] = {}
    best_within_guard: dict[str, float] = {}
    hypotheses: dict[str, list[str]] = {}
    for beam_size in args.beam_sizes:
        figures, found = sweep(
            model, tokenizer, calls, call_batches, test_batches, test_references, beam_size,
            args.boosts,
        )  # fmt: skip
        decoders.update(figures)
        hypotheses.update(found)
        examples.update({name: texts[::every] for name, texts in found.items()})
        passing = [
            b
            for b in args.boosts
            if figures[f"beam{beam_size}_hotwords_{b:g}"]["test_wer_change"] <= WER_GUARD
        ]
        within_guard[f"beam{beam_size}"] = passing
        if passing:
            best_within_guard[f"beam{beam_size}"] = max(
                passing, key=lambda b: _recall_then_wer(figures[f"beam{beam_size}_hotwords_{b:g}"])
            )
    result["decoders"] = decoders
    result["boosts_within_guard"] = within_guard
    result["best_boost_within_guard"] = best_within_guard
    widest = f"beam{max(args.beam_sizes)}"
    needed = boost_needed(model, tokenizer, call_batches, calls, hypotheses[widest])
    result["boost_needed"] = {
        "against": widest,
        "quantiles": _quantiles(needed),
        "reachable_recall": {
            f"{b:g}": round(100.0 * sum(n <= b for n in needed) / len(needed), 1)
            for b in args.boosts
        },
    }
    graph = HotwordGraph.from_phrases(tokenizer, NAMES, boost=HOTWORD_BOOST)
    result["test_timing"] = {
        "boost": HOTWORD_BOOST,
        "repeats": args.repeats,
        **{
            f"beam{beam_size}": time_biasing(
                model, tokenizer, test_batches, beam_size, graph, args.repeats
            )
            for beam_size in args.beam_sizes
        },
    }
    result["examples"] = examples
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
