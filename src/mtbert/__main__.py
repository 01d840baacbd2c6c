"""`python -m mtbert` runs the command line."""

from mtbert.cli import main

main()
