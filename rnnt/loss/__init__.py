"""Exact RNN-T loss, plain and fused with the joiner: the package's public entry points.

The transducer loss sums over every alignment of U tokens to T encoder frames. Both exact
losses share one forward-backward over each utterance's T x (U+1) lattice and run in float32
(float64 for float64 inputs), also under autocast:

- ``rnnt_loss`` (``plain.py``): the loss on given (B, T, U+1, V) joiner logits, torchaudio's
  contract, log-softmax inside.
- ``fused_rnnt_loss`` (``fused.py``): the joiner fused with the loss, computing its logits a
  chunk of cells at a time, so the (B, T, U+1, V) tensor is never held; equal to
  ``rnnt_loss`` on the joiner's full logits.
- ``reference_rnnt_loss`` (``reference.py``): a slow, obviously-correct loop for tests.

``lattice.py`` holds the shared forward-backward and numeric helpers, ``checks.py`` the
argument checks.
"""

from rnnt.loss.fused import fused_rnnt_loss
from rnnt.loss.plain import rnnt_loss
from rnnt.loss.reference import reference_rnnt_loss

__all__ = ["fused_rnnt_loss", "reference_rnnt_loss", "rnnt_loss"]
