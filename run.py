"""Train with the defaults of rnnt/constants.py: the same as `rnnt fit`.

python run.py                                  # constants.py as it is
python run.py --config configs/demo.yaml       # any `rnnt fit` option works here too
python run.py --ckpt_path last                 # resume the run from its last checkpoint
"""

import sys

from rnnt.lightning_cli import make_cli

if __name__ == "__main__":
    make_cli(["fit", *sys.argv[1:]])
