"""Piper neural speech synthesis (VITS voices run by onnxruntime), from the optional ``demo`` extra.

``synthesize(text, voice, seed)`` returns 16-bit samples at the voice's rate (22 050 Hz for
joe), levelled to full scale. Voices come from PyPI wheels that ship the ONNX model
(``PIPER_VOICES`` in ``rnnt/constants.py``); nothing is downloaded.

Reproducibility: a Piper model draws random normal noise inside its ONNX graph (two
``RandomNormalLike`` ops: one feeds the duration predictor, scaled by ``noise_w_scale``, one the
decoder, scaled by ``noise_scale``). onnxruntime seeds each such op once, when the session is
created, and its generator then runs on from call to call, so the same text spoken twice gives
different audio; neither ``onnxruntime.set_seed`` nor a ``seed`` attribute on the op changes that
(checked with onnxruntime 1.32). So when a voice is loaded, each random op is replaced by a few
plain ops that read a new graph input instead, and ``synthesize`` fills those inputs with normal
noise drawn from ``numpy.random.default_rng(seed)``: the audio then depends only on the
arguments (on one machine and onnxruntime version: float arithmetic may differ between CPUs),
while the noise scales keep their usual effect on voice texture and rhythm. With both noise
scales 0 the output equals Piper's own (to 1 in the last bit: we round where Piper truncates).

A loaded voice (1-2 s to load) is kept for the life of the process, with onnxruntime
limited to ``PIPER_THREADS`` threads: the corpus runs one worker process per core. The
``piper``, ``onnx`` and ``onnxruntime`` packages are imported only when first needed.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rnnt.constants import (
    PIPER_LENGTH_SCALE_RANGE,
    PIPER_NOISE_SCALE_RANGE,
    PIPER_NOISE_W_SCALE_RANGE,
    PIPER_THREADS,
    PIPER_VOICES,
)

NAME = "piper"

_INSTALL_HINT = "pip install 'rnnt-lightning[demo]'"
# Normal values fed to each random op per sentence: enough for about 16 s of speech
# (192 channels x 22050/256 frames per second); a longer sentence reuses them cyclically.
_NOISE_VALUES = 1 << 18
_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
_RANDOM_OPS |= {"Multinomial", "Bernoulli"}


@dataclass(frozen=True)
class Voice:
    """How one utterance is spoken.

    ``name`` is a key of ``PIPER_VOICES`` ("joe"); ``length_scale`` multiplies every phoneme's
    duration (> 1 is slower); ``noise_scale`` is the amount of noise given to the decoder (voice
    texture) and ``noise_w_scale`` the amount given to the duration predictor (rhythm); 0 turns
    each off. The defaults are joe's own.
    """

    engine: ClassVar[str] = NAME
    name: str
    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w_scale: float = 0.8


def missing() -> str | None:
    """Why Piper cannot run here (a package of the ``demo`` extra is missing), else ``None``."""
    for module, package in (("piper", "piper-tts"), ("onnx", "onnx")):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{package} is not installed: {_INSTALL_HINT}"
    if not voice_names():
        wheels = ", ".join(name.replace("_", "-") for name in PIPER_VOICES.values())
        return f"no Piper voice is installed (one of: {wheels}): {_INSTALL_HINT}"
    return None


def voice_names() -> list[str]:
    """The voices of ``PIPER_VOICES`` whose package is installed here."""
    names = []
    for name, module in PIPER_VOICES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        names.append(name)
    return names


def draw_voice(rng: np.random.Generator, name: str) -> Voice:
    """Voice ``name`` with a random length scale, noise scale and duration noise (in that order).

    Each is uniform over its range in ``rnnt/constants.py``, rounded to 0.01.
    """
    length_scale, noise_scale, noise_w_scale = (
        round(float(rng.uniform(low, high)), 2)
        for low, high in (
            PIPER_LENGTH_SCALE_RANGE,
            PIPER_NOISE_SCALE_RANGE,
            PIPER_NOISE_W_SCALE_RANGE,
        )
    )
    return Voice(
        name=name,
        length_scale=length_scale,
        noise_scale=noise_scale,
        noise_w_scale=noise_w_scale,
    )


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; returns ``(samples (S,) int16, sample_rate Hz)``.

    ``seed`` seeds the model's noise (see the module docstring): the result depends only on the
    arguments. The samples are scaled so that the peak is full scale; a text that phonemizes to
    nothing gives no samples.

    Raises:
        ValueError: the voice is not installed here.
    """
    loaded = _load(voice.name)
    rng = np.random.default_rng(seed)
    scales = np.array([voice.noise_scale, voice.length_scale, voice.noise_w_scale], np.float32)
    pieces = []
    for phonemes in loaded.piper.phonemize(text):
        if not phonemes:
            continue
        phoneme_ids = loaded.piper.phonemes_to_ids(phonemes)
        feeds = {
            "input": np.array([phoneme_ids], dtype=np.int64),
            "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
            "scales": scales,
        }
        if loaded.needs_speaker:
            feeds["sid"] = np.array([loaded.piper.config.default_speaker_id], dtype=np.int64)
        for input_name in loaded.noise_inputs:
            feeds[input_name] = rng.standard_normal(_NOISE_VALUES, dtype=np.float32)
        pieces.append(loaded.session.run(None, feeds)[0].reshape(-1))
    rate = loaded.piper.config.sample_rate
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-8:
        return np.zeros(audio.size, dtype=np.int16), rate
    return np.round(audio * (32767.0 / peak)).astype(np.int16), rate


def check_voices(names: list[str]) -> None:
    """Raise ``ValueError`` naming every voice in ``names`` that is not installed here."""
    installed = voice_names()
    unknown = [name for name in names if name not in installed]
    if unknown:
        raise ValueError(
            f"unknown Piper voices {unknown}: installed here {installed}; a voice is a key of "
            f"PIPER_VOICES in rnnt/constants.py whose package is installed ({_INSTALL_HINT})"
        )


# --- internals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    piper: Any  # piper.PiperVoice, for its phonemizer and config: its synthesize() would fail
    session: Any  # onnxruntime.InferenceSession of the rewritten graph
    noise_inputs: tuple[str, ...]  # graph inputs that replace the random ops, in graph order
    needs_speaker: bool  # a multi-speaker model: takes a speaker id ("sid")


@functools.cache
def _load(name: str) -> _Loaded:
    check_voices([name])
    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    package = importlib.import_module(PIPER_VOICES[name])
    model = onnx.load(str(package.model_path()))
    noise_inputs = _feed_random_ops(model.graph)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = PIPER_THREADS
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(package.config_path()).read_text("utf-8")))
    return _Loaded(
        piper=PiperVoice(session=session, config=config),
        session=session,
        noise_inputs=noise_inputs,
        needs_speaker=any(graph_input.name == "sid" for graph_input in session.get_inputs()),
    )


def _feed_random_ops(graph: Any) -> tuple[str, ...]:
    """Replace each ``RandomNormalLike`` in ``graph`` by ops reading a new 1-D float input.

    The output keeps its shape: the input's values, repeated as often as needed, are cut to the
    output's element count and reshaped. Returns the new inputs' names.

    Raises:
        RuntimeError: the graph has another kind of random op, or one with a mean, scale or
            type this does not handle, so its audio could not be made reproducible.
    """
    import onnx

    helper, tensor_proto = onnx.helper, onnx.TensorProto
    nodes, noise_inputs = [], []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            attributes.get("mean", 0.0) != 0.0
            or attributes.get("scale", 1.0) != 1.0
            or attributes.get("dtype", tensor_proto.FLOAT) != tensor_proto.FLOAT
        ):
            raise RuntimeError(f"Piper model: unexpected attributes {attributes} on {node.name}")
        noise = f"noise_{len(noise_inputs)}"
        noise_inputs.append(noise)
        graph.input.append(helper.make_tensor_value_info(noise, tensor_proto.FLOAT, [None]))
        prefix = f"{node.name or noise}/seeded"

        def part(suffix: str, prefix: str = prefix) -> str:
            return f"{prefix}/{suffix}"

        one = helper.make_tensor(part("one"), tensor_proto.INT64, [1], [1])
        zero = helper.make_tensor(part("zero"), tensor_proto.INT64, [1], [0])
        nodes += [
            helper.make_node("Shape", [node.input[0]], [part("shape")]),
            helper.make_node("ReduceProd", [part("shape")], [part("count")], keepdims=1),
            helper.make_node("Shape", [noise], [part("size")]),
            helper.make_node("Constant", [], [part("one")], value=one),
            helper.make_node("Constant", [], [part("zero")], value=zero),
            # repeats = ceil(count / size), in integers
            helper.make_node("Add", [part("count"), part("size")], [part("sum")]),
            helper.make_node("Sub", [part("sum"), part("one")], [part("rounded")]),
            helper.make_node("Div", [part("rounded"), part("size")], [part("repeats")]),
            helper.make_node("Tile", [noise, part("repeats")], [part("tiled")]),
            helper.make_node("Slice", [part("tiled"), part("zero"), part("count")], [part("flat")]),
            helper.make_node("Reshape", [part("flat"), part("shape")], [node.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    left = sorted({node.op_type for node in _all_nodes(graph) if node.op_type in _RANDOM_OPS})
    if left:
        raise RuntimeError(f"Piper model: random ops {left} would make its audio irreproducible")
    return tuple(noise_inputs)


def _all_nodes(graph: Any) -> Iterator[Any]:  # every node, also inside If/Loop/Scan bodies
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                yield from _all_nodes(subgraph)
