"""streamrestore: identity-preserving face restoration for video files and live streams."""
from streamrestore._version import __version__

__all__ = ["__version__"]
