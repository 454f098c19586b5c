"""The token layout: how a tokenizer's tokens of one image form one sequence, and which AR step emits each token.

DESIGN.md's unifying idea: every family flattens its tokens into one sequence of length L, token maps one after
another (each map in raster order), and gives each token a **group id**, the AR step that emits it. Attention is
allowed from query i to key j iff `group[j] <= group[i]`, so one mask, one kernel and one decoding loop serve every
family. A layout is
  * `maps`: the token maps (h, w), coarse to fine (one map for a VQ grid; VAR's scales 1x1 .. 16x16; NFIG's bands);
  * `group_by`: `"token"` (each token is its own group: next-token, raster order) or `"map"` (each map is one group:
    next-scale, next-band);
  * the token kind: `"ids"` of a `vocab_size` vocabulary, or `"vectors"` of `token_dim` floats (continuous tokens).
Every token has a group id, a level (its map's index) and a 2-D position (row, column in its map). This file is the
only place that turns maps into sequence offsets: models, masks, samplers, benchmarks and token files read a layout.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

GROUP_BY = ("token", "map")
KINDS = ("ids", "vectors")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Token maps, grouping into AR steps and token kind of one image's token sequence (see the module docstring)."""

  maps: tuple[tuple[int, int], ...]
  group_by: str = "token"
  kind: str = "ids"
  vocab_size: int = 0
  token_dim: int = 0

  def __post_init__(self):
    maps = tuple((int(h), int(w)) for h, w in self.maps)
    object.__setattr__(self, "maps", maps)
    if not maps or any(h < 1 or w < 1 for h, w in maps):
      raise ValueError(f"a token layout needs at least one non-empty map, got maps={maps}")
    if self.group_by not in GROUP_BY:
      raise ValueError(f"group_by must be one of {GROUP_BY}, got {self.group_by!r}")
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    if self.kind == "ids" and self.vocab_size < 1:
      raise ValueError(f"a layout of ids needs vocab_size >= 1, got {self.vocab_size}")
    if self.kind == "vectors" and self.token_dim < 1:
      raise ValueError(f"a layout of vectors needs token_dim >= 1, got {self.token_dim}")

  # ------------------------------------------------------------------ constructors
  @classmethod
  def raster(cls, grid: Sequence[int], vocab_size: int = 0, *, kind: str = "ids",
             token_dim: int = 0) -> "TokenLayout":
    """One h x w map, one token per AR step in raster order (next-token)."""
    return cls(((grid[0], grid[1]),), "token", kind, vocab_size, token_dim)

  @classmethod
  def square_maps(cls, sides: Sequence[int], vocab_size: int) -> "TokenLayout":
    """Square maps of the given sides, one map per AR step (next-scale: VAR's 1, 2, 3, ..., 16)."""
    return cls(tuple((int(p), int(p)) for p in sides), "map", "ids", vocab_size)

  # ------------------------------------------------------------------ sizes
  @property
  def map_sizes(self) -> tuple[int, ...]:
    return tuple(h * w for h, w in self.maps)

  @property
  def num_tokens(self) -> int:
    """L, the sequence length."""
    return sum(self.map_sizes)

  @property
  def grid(self) -> tuple[int, int]:
    """The finest map (the latent's grid)."""
    return self.maps[-1]

  @property
  def num_groups(self) -> int:
    """The number of AR steps."""
    return self.num_tokens if self.group_by == "token" else len(self.maps)

  @property
  def group_sizes(self) -> tuple[int, ...]:
    """Tokens emitted by each AR step."""
    return (1,) * self.num_tokens if self.group_by == "token" else self.map_sizes

  @property
  def group_starts(self) -> tuple[int, ...]:
    """Sequence offset of each AR step's first token."""
    return tuple(np.concatenate([[0], np.cumsum(self.group_sizes)[:-1]]).astype(int).tolist())

  @property
  def equal_groups(self) -> bool:
    """Whether all AR steps emit the same number of tokens."""
    return len(set(self.group_sizes)) == 1

  @property
  def progressive(self) -> bool:
    """Whether every prefix of maps decodes to an image (multi-scale or band tokenizers)."""
    return len(self.maps) > 1

  # ------------------------------------------------------------------ per-token arrays [L]
  def group_ids(self) -> np.ndarray:
    """Group id (AR step) of each token, int32 [L]."""
    return np.repeat(np.arange(self.num_groups), self.group_sizes).astype(np.int32)

  def levels(self) -> np.ndarray:
    """Map index of each token, int32 [L]."""
    return np.repeat(np.arange(len(self.maps)), self.map_sizes).astype(np.int32)

  def positions(self) -> np.ndarray:
    """(row, column) of each token in its map, int32 [L, 2]."""
    rows = [np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2) for h, w in self.maps]
    return np.concatenate(rows).astype(np.int32)

  # ------------------------------------------------------------------ maps <-> sequence
  def map_bounds(self) -> list[tuple[int, int]]:
    """[start, end) of each map's tokens in the sequence."""
    ends = np.cumsum(self.map_sizes).tolist()
    return list(zip([0] + ends[:-1], ends))

  def split(self, tokens_BL, num_maps: int | None = None) -> list:
    """The first `num_maps` maps (all by default) of sequences [B, >= their total, ...] as [B, h, w, ...]."""
    b = tokens_BL.shape[0]
    bounds = list(zip(self.map_bounds(), self.maps))[:len(self.maps) if num_maps is None else num_maps]
    return [tokens_BL[:, s:e].reshape(b, h, w, *tokens_BL.shape[2:]) for (s, e), (h, w) in bounds]

  def token_shape(self) -> tuple[int, ...]:
    """The shape of one image's tokens: [L] for ids, [L, token_dim] for vectors."""
    return (self.num_tokens,) if self.kind == "ids" else (self.num_tokens, self.token_dim)

  def check(self, tokens) -> None:
    """Raises naming the shapes if `tokens` [B, ...] do not have this layout's per-image shape."""
    if tuple(tokens.shape[1:]) != self.token_shape():
      raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not match the layout's per-image shape "
                       f"{self.token_shape()} ({self.describe()})")

  # ------------------------------------------------------------------ serialisation
  def to_json(self) -> dict:
    return {"maps": [list(m) for m in self.maps], "group_by": self.group_by, "kind": self.kind,
            "vocab_size": self.vocab_size, "token_dim": self.token_dim}

  @classmethod
  def from_json(cls, d: dict) -> "TokenLayout":
    return cls(tuple(tuple(m) for m in d["maps"]), d["group_by"], d["kind"], d.get("vocab_size", 0),
               d.get("token_dim", 0))

  def describe(self) -> str:
    maps = ",".join(f"{h}x{w}" for h, w in self.maps)
    what = f"ids < {self.vocab_size}" if self.kind == "ids" else f"vectors of {self.token_dim}"
    return f"{self.num_tokens} tokens ({what}) in maps {maps}, {self.num_groups} AR steps (one per {self.group_by})"


class Schedule(NamedTuple):
  """The AR steps a sampler takes when they are not the layout's groups (MAR's masked steps): tokens per step and,
  per step, the fraction of the way that a 'linear' guidance schedule reads (None: step / (steps - 1))."""

  sizes: tuple[int, ...]
  progress: tuple[float, ...] | None = None


def schedule_of(layout: TokenLayout) -> Schedule:
  """The layout's own steps: one per group."""
  return Schedule(layout.group_sizes)
