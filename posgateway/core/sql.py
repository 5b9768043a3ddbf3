"""Hand-written SQL for the hot paths (connects, the payment round trip).

The ORM took several times longer to *build* these statements than the database took to run
them (docs/performance.md), so the services write them out. Values are prepared by the model
fields and rows converted back by them, as the ORM does, so SQLite and PostgreSQL read and
write exactly what the ORM would. Everything else stays on the ORM.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import ForeignObjectRel


class _Names:
    """A model in a statement template: ``{Device}`` is its table, ``{Device.status}`` the
    column of a field (by name or attname), both from ``_meta``."""

    __slots__ = ("model",)

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model

    def __format__(self, spec: str) -> str:
        return self.model._meta.db_table

    def __getattr__(self, name: str) -> str:
        return column(self.model._meta.get_field(name))


def column(field: models.Field | ForeignObjectRel) -> str:
    """The column of a field that a statement names: a concrete one (a reverse relation, or a
    relation over several columns, has none)."""
    assert isinstance(field, models.Field), field
    assert field.column is not None, field
    return field.column


def statement(template: str, *models_: type[models.Model]) -> str:
    """A hand-written statement with its table and column names taken from the models' ``_meta``:
    ``statement("UPDATE {Device} SET {Device.last_seq} = ...", Device)``. A renamed field or
    table fails here, when the module is imported, not in production."""
    return template.format(**{model.__name__: _Names(model) for model in models_})


def db() -> BaseDatabaseWrapper:
    """This thread's connection itself (each attribute of ``django.db.connection`` is a lookup)."""
    return connections[DEFAULT_DB_ALIAS]


def execute(sql: str, params: list | tuple, fetch: str = "") -> Any:
    """Run one statement; ``fetch`` "one" or "all" rows, else the number of rows changed."""
    with db().cursor() as cursor:
        cursor.execute(sql, params)
        if fetch == "one":
            return cursor.fetchone()
        if fetch == "all":
            return cursor.fetchall()
        return cursor.rowcount


def dt_param(value: dt.datetime | None) -> Any:
    """A datetime as a statement parameter, as the ORM passes it."""
    return db().ops.adapt_datetimefield_value(value)


def columns(model: type[models.Model], alias: str) -> str:
    """Every concrete column of ``model`` under the table alias, in field order."""
    return ", ".join(f"{alias}.{f.column}" for f in model._meta.concrete_fields)


def instances(row: tuple, *models_: type[models.Model]) -> list[Any]:
    """Model instances from a row of their concrete columns (``columns``), converted as the ORM
    does; None for an outer-joined model that is missing."""
    conn = db()
    out: list[Any] = []
    start = 0
    for model in models_:
        fields = model._meta.concrete_fields
        values = list(row[start : start + len(fields)])
        start += len(fields)
        if values[0] is None:
            out.append(None)
            continue
        for n, (col, converters) in enumerate(_converters(conn, model)):
            for convert in converters:
                values[n] = convert(values[n], col, conn)
        out.append(model.from_db(conn.alias, [f.attname for f in fields], values))
    return out


_CONVERTERS: dict[tuple[str, type], list] = {}


def _converters(conn: BaseDatabaseWrapper, model: type[models.Model]) -> list:
    key = (conn.vendor, model)
    if key not in _CONVERTERS:
        cols = [f.get_col(model._meta.db_table) for f in model._meta.concrete_fields]
        _CONVERTERS[key] = [
            (col, conn.ops.get_db_converters(col) + col.output_field.get_db_converters(conn))
            for col in cols
        ]
    return _CONVERTERS[key]


def loaded(model: type[models.Model], **values: Any) -> Any:
    """An instance as if loaded from the database with only these fields (by attname)."""
    attnames = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(DEFAULT_DB_ALIAS, attnames, [values[name] for name in attnames])


_INSERTS: dict[tuple[str, type, str], tuple[list, str]] = {}


def insert(obj: models.Model, *, returning: str = "", params: tuple = ()) -> Any:
    """INSERT the object as ``save()`` stores it; returns the row of ``returning`` (a RETURNING
    list, with its ``params``), e.g. its primary key. The object is marked saved."""
    conn = db()
    model = type(obj)
    key = (conn.vendor, model, returning)
    if key not in _INSERTS:
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        names = ", ".join(conn.ops.quote_name(column(f)) for f in fields)
        table = conn.ops.quote_name(model._meta.db_table)
        marks = ", ".join(["%s"] * len(fields))
        statement = f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608 (model columns)
        _INSERTS[key] = (fields, statement + (f" RETURNING {returning}" if returning else ""))
    fields, statement = _INSERTS[key]
    values = [f.get_db_prep_save(f.pre_save(obj, True), conn) for f in fields]
    row = execute(statement, [*values, *params], fetch="one" if returning else "")
    mark_saved(obj)
    return row


def mark_saved(obj: models.Model) -> None:
    """An instance stored by hand-written SQL is no longer one to add."""
    obj._state.adding, obj._state.db = False, DEFAULT_DB_ALIAS
