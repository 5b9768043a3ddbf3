import os


def pytest_collection_modifyitems(config, items):
    """Scenario 6's smoke run (two daphne processes on PostgreSQL + Redis, its own database)
    belongs to the PostgreSQL + Redis pass of the suite: the embedded pass leaves it out rather
    than run it twice (it is deselected, not skipped)."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    kept = [item for item in items if "production_pass_only" not in item.keywords]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
