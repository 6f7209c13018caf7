"""`python -m easyhard` runs the command line."""

from .cli import main

main()
