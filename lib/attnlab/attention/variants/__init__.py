"""Efficient attention variants, one file each, registered in ATTENTION.

Every module of this folder is imported here: a new file with one ``@ATTENTION.register`` class is all a
new variant needs.
"""

from ...registry import import_submodules

import_submodules(__name__, __path__)
