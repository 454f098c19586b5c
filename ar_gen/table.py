"""Plain-text and Markdown tables for command output (benchmarks, FID results, the demo's family comparison)."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[tuple[str, str, str]], markdown: bool = False) -> str:
  """A table; `columns` are (key, header, format spec); Markdown (pipes) if `markdown`, else aligned text."""
  cells = [[h for _, h, _ in columns]] + [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns]
                                          for r in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  if markdown:
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]])
  lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
  return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
