"""Random generators: every random draw goes through a `torch.Generator`, one per problem."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def make_generators(
    seeds: int | Sequence[int], batch_size: int, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One seeded generator per problem.

    An ``int`` seed gives every problem the same stream, so that problem ``b`` is solved as it
    would be alone with that seed; a sequence gives one seed per problem.

    Example:
        >>> a, b = make_generators(7, 2)
        >>> bool(torch.rand(1, generator=a) == torch.rand(1, generator=b))
        True
    """
    if isinstance(seeds, int):
        seeds = [seeds] * batch_size
    if len(seeds) != batch_size:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size} problems")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def draw_seeds(generators: Sequence[torch.Generator]) -> list[int]:
    """One fresh 62-bit seed from each generator (to seed a sub-stream, e.g. the dynamics' own draws)."""
    return [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in generators]
