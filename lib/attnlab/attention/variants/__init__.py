"""Efficient attention variants, one file each (registered in ATTENTION when imported here)."""

from . import fnet, linear, linformer, local, performer, probsparse  # noqa: F401
