"""``python -m streamrestore.cli``: the ``streamrestore`` program (``accelerate launch -m streamrestore.cli train ...``)."""
from streamrestore.cli.app import entry

if __name__ == "__main__":
    entry()
