"""``python -m facerec``: the same as the ``facerec`` command."""

from facerec.cli import main

if __name__ == "__main__":
    main()
