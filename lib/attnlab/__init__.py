"""attnlab: positional encodings, length extrapolation and efficient attention, reproduced."""

from .errors import ConfigError
from .experiments import load
from .session import NotebookRun, start

__version__ = "0.1.0"
__all__ = ["ConfigError", "load", "start", "NotebookRun", "__version__"]
