"""Real human speech that Debian main packages install, as demo-corpus utterances.

The synthesized demo corpus teaches a model machine voices; these recordings add human ones:
extra training data, and a ``test_human`` split whose speaker training never hears. Entry
point: ``rnnt.corpus.recordings.human.human_utterances``. One module per source (each reads
its package's own layout from its Debian location, checks every label it uses, and says with
``missing(root)`` why it cannot be used):

| module | package | speech used | speakers | split | licence |
| --- | --- | --- | --- | --- | --- |
| ``asterisk`` | asterisk-core-sounds-en-wav (+ -en: labels) | 169 word/prompt clips, 2.3 min | 1 | test_human (composed) | CC-BY-SA-3.0 |
| ``warzone2100`` | warzone2100-data | 216 phrases, 4.9 min | 7 | train | GPL-2+ |
| ``ktuberling`` | ktuberling-data | 69 words, 0.8 min | 1 | train | GPL-2+ |
| ``klettres`` | klettres-data | 36 words, 0.4 min | 2 | train | GPL-2+ |

Not used: qabcs-data (its English words are text-to-speech, per its CONTRIBUTORS), the
Asterisk prompts whose label and file name disagree, letters (read as names or as sounds?).

The other modules: ``record`` (``Recording``, ``Found`` with the skips), ``labels`` (label to
transcript), ``audio`` (read, downmix, trim, resample to 16 kHz), ``compose`` (grammar
sentences from word clips), ``human`` (the sources, and the FLAC files and manifest records).
"""
