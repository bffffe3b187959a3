"""`python -m crmdrop` runs the command line."""

from crmdrop.cli import main

main()
