"""The demo corpus: English sentences spoken by speech engines and people, with background noise.

Entry point: ``rnnt.corpus.synth.synthesize_demo_corpus``. The modules, from words to files:

- ``vocabulary``, ``spoken_numbers``, ``grammar``: random sentences and their transcripts;
- ``engines``: one module per speech synthesizer (eSpeak NG, Piper, Flite, Festival);
- ``voices``, ``plan``: which engines each split hears, each utterance's voice and settings,
  drawn from the seed;
- ``recordings``: human speech from Debian packages (training clips, the ``test_human`` split);
- ``noise``, ``resample``, ``render``: the audio of one utterance or noise file, in a worker process;
- ``synth``: the whole corpus: workers, progress, manifests and ``corpus.json``.

The training pipeline (``rnnt.data``, ``rnnt.models``, ``rnnt.train``) never imports this
package; it reads the corpus through its manifests like any other. This package imports nothing.
"""
