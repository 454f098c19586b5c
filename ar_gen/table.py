"""Plain-text tables for command output (benchmarks, FID results)."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
  """A plain-text table; `columns` are (key, header, format spec)."""
  cells = [[h for _, h, _ in columns]] + [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns]
                                          for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
  return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
