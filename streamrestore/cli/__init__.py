"""The ``streamrestore`` command line: one module per command, the work done by the library.

* :mod:`streamrestore.cli.app`: ``main(argv) -> exit code`` and the console script ``entry``
  (command dispatch, logging, exit codes for user errors and stop signals);
* :mod:`streamrestore.cli.options`: the option groups and helpers the commands share;
* :mod:`streamrestore.cli.restore`: ``streamrestore INPUT`` (the main command);
* ``batch``, ``bench``, ``cache``, ``eval``, ``live``, ``train``: ``streamrestore <name> ...``.

Each command module exposes ``build_parser()`` and ``main(argv: list[str]) -> int``; user
mistakes raise :class:`streamrestore.errors.UserError` subclasses, which ``main`` turns into
exit code 2. ``python -m streamrestore.cli`` runs the program too. Importing this package loads
no torch: ``streamrestore --version`` stays fast.
"""
from streamrestore.cli.app import entry, main
from streamrestore.cli.restore import SUBCOMMANDS, build_parser

__all__ = ["SUBCOMMANDS", "build_parser", "entry", "main"]
