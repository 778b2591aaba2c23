"""`python -m mess.cli` runs the command line."""

from mess.cli.main import main

main()
