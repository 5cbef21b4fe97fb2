"""`python -m rnnt ...` is the `rnnt` command."""

from rnnt.cli import main

main()
