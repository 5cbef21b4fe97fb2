"""Speech synthesis engines for the demo corpus, one module per engine.

An engine module exposes ``synthesize(text, voice, seed) -> (samples (S,) int16, rate Hz)``,
whose output depends only on its arguments, and ``check_voices(names)``, which raises
``ValueError`` naming the voices it lacks. ``espeak`` (eSpeak NG through ctypes) is the one
engine so far.

Import the engine modules themselves (``from rnnt.corpus.engines import espeak``): this package
imports nothing, so loading one engine's library never loads another's.
"""
