"""``python -m streamrestore``: the ``streamrestore`` program, where its script is not on PATH
(a user install on Windows, a virtual environment not activated)."""
from streamrestore.cli.app import entry

if __name__ == "__main__":
    entry()
