"""Reports by day (hits-by-day, rivalry-hits-by-day) with every day of their range; bars for a terminal.

SQL gives one row per day and series (a category, a rivalry) that has hits; a chart also needs the days
without any, or a quiet week would vanish from it. `DayCounts` holds the range whole; `rows()` gives it back
as report rows (zeros included) for pipes, `draw_bars()` as horizontal bars scaled to the terminal's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bot.terminal import printable
from bot.timeutil import utcnow

# One fill per series, the heaviest for the series with the most hits; the sixth and later share the last.
GLYPHS = "█▓▒░▚▞"
OTHER = "other"
THIN = "▏"  # a day with hits too few to fill one column still shows a mark
LABEL_WIDTH = len("2026-01-01")
MIN_BAR_WIDTH = 10


@dataclass(frozen=True)
class DayCounts:
    """A report by day over a whole range: `days` are every day in it, oldest first; `series` are the
    series that have hits, the most hits first; `counts[day, series]` is absent where a day has none."""

    columns: list[str]
    days: list[str]
    series: list[str]
    counts: dict[tuple[str, str], tuple]  # (day, series) -> the row's remaining columns, value first

    @classmethod
    def from_rows(
        cls,
        columns: list[str],
        rows: Sequence[Sequence],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> DayCounts:
        """Rows (day, series, value, more numbers...) over [since, until): without `since` the range starts at
        the first day with hits; without `until` it ends today when `since` is given, else at the last day
        with hits (a replayed 2023 feed is not followed by years of zeros)."""
        counts = {(row[0], row[1]): tuple(row[2:]) for row in rows}
        found = sorted({day for day, _ in counts})
        first = since.date() if since else (date.fromisoformat(found[0]) if found else None)
        if until is not None:
            last = _day_before(until)
        elif since is not None:
            last = utcnow().date()
        else:
            last = date.fromisoformat(found[-1]) if found else None
        totals: dict[str, float] = {}
        for (_, name), values in counts.items():
            totals[name] = totals.get(name, 0) + values[0]
        series = sorted(totals, key=lambda name: (-totals[name], name))
        return cls(columns, _every_day(first, last), series, counts)

    def total(self, day: str) -> float:
        return sum(self.counts.get((day, name), (0,))[0] for name in self.series)

    def rows(self) -> list[tuple]:
        """The report's rows with a row of zeros for each day and series without hits: each day has every
        series, ordered as the report's SQL orders them (most first, then by name), so leaving out the
        zeros gives back the view's rows."""
        zeros = tuple(0 for _ in self.columns[2:])
        rows = []
        for day in self.days:
            series = [(name, self.counts.get((day, name), zeros)) for name in self.series]
            series.sort(key=lambda item: (-item[1][0], item[0]))
            rows.extend((day, name, *values) for name, values in series)
        return rows


def _day_before(moment: datetime) -> date | None:
    """The last day an exclusive `until` leaves in; None before year 1 (`--until 0001-01-01` leaves none)."""
    try:
        return (moment - timedelta(microseconds=1)).date()
    except OverflowError:
        return None


def _every_day(first: date | None, last: date | None) -> list[str]:
    if first is None or last is None or first > last:
        return []
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def draw_bars(title: str, chart: DayCounts, width: int) -> list[str]:
    """Lines for a terminal `width` columns wide: the title, a legend (which fill is which series), one bar
    per day, its parts in the legend's order, with the day's total after it, and the scale. The longest bar
    fills the width left beside the day and its total; no line is wider than `width` - 1 (a line that
    reaches the last column makes some terminals wrap)."""
    value = chart.columns[2]
    groups = _glyph_groups(chart.series)
    top = max((chart.total(day) for day in chart.days), default=0)
    number_width = len(_number(top))
    bar_width = max(width - 1 - LABEL_WIDTH - 1 - 1 - number_width, MIN_BAR_WIDTH)
    lines = [printable(title), *_legend(groups, width - 1)]
    for day in chart.days:
        parts = [sum(chart.counts.get((day, name), (0,))[0] for name in names) for _, names in groups]
        bar = _bar(parts, [glyph for glyph, _ in groups], bar_width / top if top else 0)
        lines.append(f"{day} {bar} {_number(chart.total(day))}".rstrip())
    if not chart.days:
        lines.append("(no days in the range)")
    elif top:
        lines.append(f"scale: the longest bar, {_counted(top, value)}, is {bar_width} columns wide")
    else:
        lines.append(f"no {value} on these days")
    return lines


def _glyph_groups(series: list[str]) -> list[tuple[str, list[str]]]:
    """(fill, the series drawn with it): one fill each, the last shared by every series left ("other")."""
    if len(series) <= len(GLYPHS):
        return [(glyph, [name]) for glyph, name in zip(GLYPHS, series, strict=False)]
    kept = len(GLYPHS) - 1
    alone = [(glyph, [name]) for glyph, name in zip(GLYPHS[:kept], series[:kept], strict=True)]
    return [*alone, (GLYPHS[-1], series[kept:])]


def _legend(groups: list[tuple[str, list[str]]], width: int) -> list[str]:
    entries = [
        f"{glyph} {printable(names[0]) if len(names) == 1 else f'{OTHER} ({len(names)})'}"
        for glyph, names in groups
    ]
    lines, line = [], ""
    for entry in entries:
        if line and len(line) + 2 + len(entry) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {entry}" if line else entry
    return [*lines, line] if line else lines


def _bar(parts: list[float], glyphs: list[str], scale: float) -> str:
    """The parts end to end, each as wide as its share: the ends are rounded from the running sum, so the
    bar's length is its total's, not the sum of each part's rounding."""
    bar, drawn, running = "", 0, 0.0
    for part, glyph in zip(parts, glyphs, strict=True):
        running += part
        end = round(running * scale)
        bar += glyph * (end - drawn)
        drawn = end
    return bar or (THIN if running > 0 else "")


def _counted(number: float, noun: str) -> str:
    """ "1 hit", "2 hits": the column's name is plural."""
    return f"{_number(number)} {noun[:-1] if number == 1 and noun.endswith('s') else noun}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
