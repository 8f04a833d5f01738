"""The chart catalog: a good edit becomes the current version, a bad one changes
nothing but the errors shown, and live sessions are counted per version."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.chart.catalog import ChartCatalog, LiveVersion, VersionUse, count_versions
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from tests.support.chart_edits import BROKEN, BROKEN_LINE, EDITED, SHIPPED


@pytest.fixture
def chart_file(tmp_path: Path) -> Path:
    path = tmp_path / "voice_turn.yaml"
    path.write_text(SHIPPED, encoding="utf-8")
    return path


@pytest.fixture
def catalog(chart_file: Path) -> ChartCatalog:
    catalog = ChartCatalog(default_registry())
    catalog.load(chart_file)
    return catalog


def test_the_edited_chart_is_a_different_version() -> None:
    assert EDITED != SHIPPED and "WRAP_UP" in compile_text(EDITED).states
    assert compile_text(EDITED).version_hash != compile_text(SHIPPED).version_hash


def test_a_good_edit_becomes_the_current_version(catalog: ChartCatalog, chart_file: Path) -> None:
    before = catalog.by_name("voice_turn")
    assert before is not None and before.chart is not None
    old = before.chart
    chart_file.write_text(EDITED, encoding="utf-8")
    result = catalog.reload(chart_file)
    assert result.ok and result.changed
    assert result.previous is old
    assert result.current is not None and "WRAP_UP" in result.current.states
    assert catalog.by_name("voice_turn") is before and before.chart is result.current
    assert catalog.charts() == [result.current]


def test_a_broken_edit_keeps_the_running_version_and_records_every_error(
        catalog: ChartCatalog, chart_file: Path) -> None:
    entry = catalog.by_name("voice_turn")
    assert entry is not None
    running = entry.chart
    chart_file.write_text(BROKEN, encoding="utf-8")
    result = catalog.reload(chart_file)
    assert not result.ok and not result.changed
    assert result.current is running and entry.chart is running
    assert [str(e) for e in entry.errors] == [
        f"{chart_file}:{BROKEN_LINE}:26: E130 unknown target state 'LISTENNING' "
        "(did you mean 'LISTENING'?)"]


def test_fixing_a_broken_edit_clears_the_errors(catalog: ChartCatalog, chart_file: Path) -> None:
    chart_file.write_text(BROKEN, encoding="utf-8")
    catalog.reload(chart_file)
    chart_file.write_text(SHIPPED, encoding="utf-8")
    result = catalog.reload(chart_file)
    assert result.ok and not result.changed        # the same version as before the bad edit
    assert result.previous_errors and not result.entry.errors


def test_unchanged_bytes_are_not_compiled_again(catalog: ChartCatalog, chart_file: Path) -> None:
    entry = catalog.by_name("voice_turn")
    assert entry is not None
    running = entry.chart
    result = catalog.reload(chart_file)
    assert result.same_source and result.current is running and not result.changed
    # Only a comment changed: compiled again, still the same version.
    chart_file.write_text("# a comment\n" + SHIPPED, encoding="utf-8")
    result = catalog.reload(chart_file)
    assert not result.same_source and result.ok and not result.changed
    assert result.current is not None and running is not None
    assert result.current.version_hash == running.version_hash


def test_a_deleted_file_is_an_error_and_the_running_version_stays(
        catalog: ChartCatalog, chart_file: Path) -> None:
    entry = catalog.by_name("voice_turn")
    assert entry is not None
    running = entry.chart
    chart_file.unlink()
    result = catalog.reload(chart_file)
    assert entry.chart is running and not result.ok
    assert [e.code for e in entry.errors] == ["E100"]
    assert "cannot read chart" in str(entry.errors[0])


def test_prepare_changes_nothing_until_applied(catalog: ChartCatalog, chart_file: Path) -> None:
    entry = catalog.by_name("voice_turn")
    assert entry is not None
    running = entry.chart
    chart_file.write_text(EDITED, encoding="utf-8")
    candidate = catalog.prepare(chart_file)
    assert candidate.chart is not None and entry.chart is running
    assert catalog.apply(candidate).changed and entry.chart is candidate.chart


def test_a_chart_compiled_elsewhere_can_be_served_and_reloaded(chart_file: Path) -> None:
    chart = compile_text(SHIPPED, str(chart_file))
    catalog = ChartCatalog(default_registry())
    catalog.add(chart_file, chart)
    assert catalog.charts() == [chart]
    result = catalog.reload(chart_file)           # same text: the same version
    assert result.ok and not result.changed and result.previous is chart


def test_sessions_are_counted_per_version() -> None:
    v1, v2 = compile_text(SHIPPED), compile_text(EDITED)
    uses = count_versions([v1, v2, v1])
    assert sorted(uses, key=lambda u: u.sessions) == [
        VersionUse("voice_turn", 1, v2.version_hash, 1),
        VersionUse("voice_turn", 1, v1.version_hash, 2)]


def test_live_versions_list_the_current_one_then_older_ones_with_sessions(
        catalog: ChartCatalog, chart_file: Path) -> None:
    entry = catalog.by_name("voice_turn")
    assert entry is not None and entry.chart is not None
    v1 = entry.chart.version_hash
    assert entry.live_versions([]) == [LiveVersion(1, v1, 0, True)]
    chart_file.write_text(EDITED, encoding="utf-8")
    catalog.reload(chart_file)
    v2 = entry.chart.version_hash
    # Two workers report sessions on v1; an older version with none is not live.
    uses = [VersionUse("voice_turn", 1, v1, 2), VersionUse("voice_turn", 1, v1, 1),
            VersionUse("voice_turn", 1, "0000000000000000", 0),
            VersionUse("other_chart", 3, "1111111111111111", 5)]
    assert entry.live_versions(uses) == [LiveVersion(1, v2, 0, True),
                                         LiveVersion(1, v1, 3, False)]
    assert LiveVersion(1, v2, 0, True).to_dict() == {
        "version": 1, "version_hash": v2, "sessions": 0, "current": True}
    assert VersionUse.from_dict(uses[0].to_dict()) == uses[0]
