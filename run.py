"""Train with the defaults of rnnt/constants.py: the same as `rnnt fit`.

python run.py                                  # constants.py as it is: after `make demo`, the demo
python run.py --config configs/demo.yaml       # any `rnnt fit` option works here too
python run.py --ckpt_path last                 # resume the run from its last checkpoint

A wrong setting or a missing file is one line on stderr with exit status 2, as with `rnnt fit`.
"""

import sys

from rnnt.cli import main

if __name__ == "__main__":
    main(["fit", *sys.argv[1:]])
