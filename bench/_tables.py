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


def section_tail(
    checks: list[str], where: list[str], sanity: list[str], how: str, caveats: str
) -> list[str]:
    """The closing parts every section's markdown shares: targets, where the time goes,
    sanity checks, how each figure is measured, caveats."""
    return [
        "### Targets",
        "",
        "Reported, not asserted: a FAIL does not fail `make bench`.",
        "",
        *checks,
        "",
        "### Where the time goes (this run)",
        "",
        *where,
        "",
        "### Sanity checks of this run",
        "",
        *("- " + s for s in sanity),
        "",
        "### How each figure is measured",
        "",
        how,
        "### Caveats",
        "",
        caveats,
    ]
