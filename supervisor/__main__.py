"""``python -m supervisor``: the same as the ``supervisor`` command."""

from ._cli import main

if __name__ == "__main__":
    main()
