"""`python -m app.cli`: the `rag` command without its console script."""

from app.cli import main

main()
