"""`python -m mfh_cli` (and `torchrun -m mfh_cli`) runs the CLI."""

from mfh_cli.cli import main

main()
