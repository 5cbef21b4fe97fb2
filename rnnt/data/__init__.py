"""Data: manifests, tokenizer, augmentation and the lhotse DataModule.

Import from the modules themselves (``rnnt.data.tokenizer``, ``rnnt.data.dataset``, ...):
this package imports nothing, so transcription and export, which need only the tokenizer,
never load Lightning or lhotse. The demo corpus that can feed it lives in ``rnnt.corpus``,
which this package never imports.
"""
