"""The Conformer-Transducer: front end, encoder, prediction network, joiner."""

from rnnt.models.transducer import PRESETS, Transducer, TransducerConfig, config_from_preset

__all__ = ["PRESETS", "Transducer", "TransducerConfig", "config_from_preset"]
