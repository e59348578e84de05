"""Structure-aware mutation fuzzing of the peer and KV protocols, seeded from captured frames.

    python -m raftio.testing.mutate peer --seed 7 --frames 100000
    python -m raftio.testing.mutate peer --seed 7 --replay 4242
    python -m raftio.testing.mutate kv --seed 7 --frames 3000
    python -m raftio.testing.mutate tcp --seed 7 --frames 20000

`engine` turns captured frames into seeded mutants (no I/O); `peer` runs a
campaign against Nodes on the in-memory network and virtual clock; `kv`
against the KV service's real client port; `tcp` against Nodes serving
the peer protocol on 127.0.0.1. Each campaign reports its figures and
every problem with the frame number it followed, and replays from its seed.
"""

from raftio.testing.mutate.engine import BOUNDARY_INTS, Mutant, Mutator, Seed

__all__ = ["BOUNDARY_INTS", "Mutant", "Mutator", "Seed"]
