"""Sub-commands of the ``streamrestore`` CLI (``streamrestore eval ...`` -> ``commands.eval.main``).

Each module exposes ``main(argv: list[str]) -> int``; user mistakes raise
:class:`streamrestore.errors.UserError` subclasses, which the CLI turns into exit code 2.
"""
