"""Which checkpoints pruning removes: a pure choice over one thread's checkpoint tree."""

from datetime import UTC, datetime, timedelta

from graphs.retention import CheckpointRow, plan_prune

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _chain(*ids: str, parents: dict[str, str | None] | None = None) -> list[CheckpointRow]:
    """Checkpoints an hour apart; each the child of the one before unless `parents` says."""
    rows = []
    for i, cid in enumerate(ids):
        parent = ids[i - 1] if i else None
        if parents and cid in parents:
            parent = parents[cid]
        rows.append(CheckpointRow(cid, parent, T0 + timedelta(hours=i)))
    return rows


def test_a_straight_history_keeps_only_its_latest() -> None:
    plan = plan_prune(_chain("1", "2", "3", "4"), cutoff=T0 + timedelta(days=1))
    assert plan.delete == ["1", "2", "3"]
    assert plan.reparent == {"4": None}


def test_nothing_newer_than_the_cutoff_goes() -> None:
    plan = plan_prune(_chain("1", "2", "3", "4"), cutoff=T0 + timedelta(hours=2))
    assert plan.delete == ["1", "2"]
    assert plan.reparent == {"3": None}


def test_fork_points_and_branch_heads_stay_and_the_tree_is_mended() -> None:
    # 1 - 2 - 3 - 4 (old branch head)
    #      \
    #       5 - 6 (latest)
    rows = _chain("1", "2", "3", "4", "5", "6", parents={"5": "2"})
    plan = plan_prune(rows, cutoff=T0 + timedelta(days=1))
    assert plan.delete == ["1", "3", "5"]
    assert plan.reparent == {"2": None, "4": "2", "6": "2"}


def test_a_lone_checkpoint_and_an_empty_thread() -> None:
    assert plan_prune(_chain("1"), cutoff=T0 + timedelta(days=1)).delete == []
    assert plan_prune([], cutoff=T0).delete == []
