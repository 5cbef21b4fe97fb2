"""Every default of the project, in one place.

Other modules take these as argument defaults; nothing else holds a magic number. Edit this
file and ``python run.py`` trains with the new defaults; a YAML config or a command-line flag
overrides any of them for one run.
"""

from __future__ import annotations

# --- the origin's configuration constants (names kept) ------------------------------------
TRAIN_MANIFEST = "data/demo/train.jsonl"  # NeMo-style JSON lines
VAL_MANIFEST = "data/demo/val.jsonl"
TEST_MANIFEST = "data/demo/test.jsonl"
BG_NOISE_PATH = "data/demo/noise"  # every audio file below it is a noise source
TOKENIZER_MODEL_PATH = "data/demo/tokenizer.model"  # SentencePiece model
BATCH_SIZE = 64  # most utterances in one batch (a cap next to MAX_BATCH_DURATION)
NUM_WORKERS = 2  # data-loader worker processes
MAX_EPOCHS = 30
ATTENTION_CONTEXT_SIZE = [-1, -1]  # [left, right] encoder frames after subsampling; -1 = unlimited
VOCAB_SIZE = 256  # SentencePiece pieces, blank not counted
LOG_DIR = "runs"  # TensorBoard logs and checkpoints

# --- audio and features -------------------------------------------------------------------
SAMPLE_RATE = 16_000  # Hz; every waveform is resampled to this, mono
N_MELS = 80  # log-mel bins
WIN_LENGTH_S = 0.025  # seconds, analysis window
HOP_LENGTH_S = 0.010  # seconds, frame shift
DITHER = 0.0  # no dither: features are deterministic

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

# --- model -----------------------------------------------------------------------------------
MODEL_PRESET = "tiny"  # tiny | small | medium | large, see rnnt/models/transducer.py
SUBSAMPLING_FACTOR = 4  # 4 or 8
CONV_KERNEL_SIZE = 15  # depthwise convolution kernel in the Conformer blocks
CAUSAL_CONV = False  # True for streaming: the convolution sees no future frames
DROPOUT = 0.1
JOINER_ACTIVATION = "tanh"  # tanh | relu | silu

# --- loss --------------------------------------------------------------------------------------
LOSS_CHUNK_SIZE = 4096  # lattice cells × vocabulary entries are computed this many (T·U) cells at a time
LOSS_REDUCTION = "mean"  # mean over utterances

# --- data --------------------------------------------------------------------------------------
MAX_BATCH_DURATION = 240.0  # seconds of audio per batch (duration bucketing); None = fixed BATCH_SIZE
NUM_BUCKETS = 20  # duration buckets of the sampler
MIN_UTTERANCE_DURATION = 0.1  # seconds; shorter utterances are skipped
MAX_UTTERANCE_DURATION = 30.0  # seconds; longer utterances are skipped
SPEED_PERTURB_FACTORS = [0.9, 1.0, 1.1]  # one is picked at random per utterance; [] = off
NOISE_PROBABILITY = 0.5  # chance that an utterance gets background noise (training only)
NOISE_SNR_RANGE_DB = [5.0, 30.0]  # signal-to-noise ratio range, dB, drawn uniformly
SEED = 1234

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
SAVE_TOP_K = 3  # best checkpoints kept by validation loss, besides last.ckpt
CHECKPOINT_FILENAME = "rnnt-{epoch:02d}-{val_loss:.2f}"
LOG_TEXT_EXAMPLES = 4  # reference/hypothesis pairs written to TensorBoard each validation

# --- decoding ------------------------------------------------------------------------------------
MAX_SYMBOLS_PER_FRAME = 5  # greedy search: at most this many tokens emitted at one encoder frame
BEAM_SIZE = 4
STREAMING_CHUNK_MS = 320  # audio per chunk fed to a streaming session, milliseconds

# --- demo corpus -------------------------------------------------------------------------------
DEMO_TRAIN_HOURS = 2.0  # hours of synthesized training speech
DEMO_VAL_UTTERANCES = 200
DEMO_TEST_UTTERANCES = 300
DEMO_VOCAB_SIZE = 128
