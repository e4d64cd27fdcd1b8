"""Who links to whom: the choice of a node's neighbours, and (later) graph analysis of overlays.

The protocol core asks a `NeighbourPolicy` which known members it should keep links to; everything
else (dialling, keepalives, repair) is the core's. Swapping the policy changes the overlay's shape and
nothing else.
"""

from .neighbours import FullMesh, MemberView, NeighbourPolicy

__all__ = ["FullMesh", "MemberView", "NeighbourPolicy"]
