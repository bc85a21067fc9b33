"""`python -m vitkit`: the same command line as the `vitkit` console script."""

from .cli import main

if __name__ == "__main__":
    main()
