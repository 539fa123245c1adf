"""``python -m kuaimod_open`` runs the ``kuaimod`` command line."""

from kuaimod_open.cli import main

if __name__ == "__main__":
    main()
