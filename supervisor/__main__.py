"""``python -m supervisor``: the same as the ``supervisor`` command."""

from ._cli._main import main

if __name__ == "__main__":
    main()
