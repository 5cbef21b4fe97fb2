"""Data: manifests, tokenizer, augmentation, the lhotse DataModule and the demo corpus.

Import from the modules themselves (``rnnt.data.tokenizer``, ``rnnt.data.dataset``, ...):
this package imports nothing, so transcription and export, which need only the tokenizer,
never load Lightning or lhotse.
"""
