"""`report --date` and export paths stay inside export.dir; a missing day lists the stored ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.cli import main
from bot.jobs.export_files import export_paths
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store

DAYS = [f"2026-11-{d:02d}" for d in range(1, 17) if d != 3]  # fifteen, 3rd missing


@pytest.fixture
async def config_with_days(tmp_path: Path, store: Store) -> Path:
    snapshots = SqliteStorage(store).snapshots
    for index, day in enumerate(DAYS):
        sid = await snapshots.create_staging(day, 1_790_000_000 + index * 86400, f"t{index}")
        await snapshots.add_entries(sid, [f"oStored{index:021d}"])
        await snapshots.promote(sid, day, 1, f"t{index}")
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {store.path}\nexport:\n  dir: {tmp_path / 'out'}\n",
                      encoding="utf-8")
    return config


@pytest.mark.parametrize("day", ["../../../tmp/evil", "2026-11-01/../../x", "/etc/passwd",
                                 "2026-02-30", "2026-13-01", "２０２６-11-01", "2026-11-01\n",
                                 "20261101x", ""])
async def test_report_date_must_be_a_date(config_with_days: Path, tmp_path: Path, day: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        await asyncio.to_thread(main, ["report", "--date", day, "--config",
                                       str(config_with_days)])
    assert exit_info.value.code == 2
    assert "not a date" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


async def report(config: Path, day: str) -> int:
    return await asyncio.to_thread(main, ["report", "--date", day, "--config", str(config)])


async def test_report_for_a_missing_day_lists_the_stored_days(
        config_with_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await report(config_with_days, "2026-10-20") == 1
    err = capsys.readouterr().err
    assert "no complete snapshot for 2026-10-20" in err
    newest = ", ".join(reversed(DAYS[-10:]))
    assert f"Stored exports, newest first: {newest}, ... (older ones too)." in err
    assert "nearest before" not in err  # there is none
    assert await report(config_with_days, "2026-11-03") == 1  # older than the ten shown
    assert "the nearest before 2026-11-03: 2026-11-02" in capsys.readouterr().err
    assert await report(config_with_days, "2026-11-04") == 0
    out = capsys.readouterr().out.split()
    assert [Path(p).name for p in out] == ["report-2026-11-04.html", "report-2026-11-04.json"]
    assert all(Path(p).parent == config_with_days.parent / "out" for p in out)


@pytest.mark.parametrize("day", ["../x", "2026-11-01/../../x", "2026-02-30", "x" * 10, ""])
def test_export_paths_refuse_what_is_not_a_date(tmp_path: Path, day: str) -> None:
    with pytest.raises(ValueError, match="not a date"):
        export_paths(tmp_path, day)


def test_export_paths_stay_in_the_directory(tmp_path: Path) -> None:
    paths = export_paths(tmp_path / "exports", "2026-12-02")
    assert {p.parent for p in paths.values()} == {tmp_path / "exports"}
