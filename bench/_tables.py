"""Tables and verdicts shared by the benchmark reports (console and Markdown)."""

from __future__ import annotations


def verdict(passed: bool | None) -> str:
    """PASS / FAIL for a target, "(scale)" for a figure shown only for scale."""
    if passed is None:
        return "(scale)"
    return "PASS" if passed else "FAIL"


def table(header: list[str], rows: list[list[str]], *, markdown: bool) -> list[str]:
    """Rows under a header, as a Markdown table or as aligned console columns."""
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return lines
