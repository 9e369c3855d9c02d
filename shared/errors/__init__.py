"""The error vocabulary: one exception class per code, the envelope, the wire form.

Services raise the classes below; the gateway answers ``envelope(err, rid)``
with ``err.status``. See ``_base`` for the hierarchy.
"""

from . import _vocabulary
from ._base import REGISTRY as REGISTRY
from ._base import CofferError as CofferError
from ._base import envelope as envelope
from ._base import from_wire as from_wire
from ._base import lookup as lookup
from ._vocabulary import *  # noqa: F403 - the vocabulary is this package's API

__all__ = ["REGISTRY", "CofferError", "envelope", "from_wire", "lookup"] + sorted(
    name
    for name, obj in vars(_vocabulary).items()
    if isinstance(obj, type) and issubclass(obj, CofferError) and obj is not CofferError
)
