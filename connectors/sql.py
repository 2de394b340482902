"""The `sql` connector: one statement against PostgreSQL (psycopg 3).

A step declared read_only runs in a READ ONLY transaction, so a write is refused by the server itself whatever
the statement looks like; a state-changing step runs in an ordinary transaction that is committed. The statement
runs under `statement_timeout`, so the server stops it when we stop waiting."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo, errors

from connectors.base import ConnectorError, StepResult, TransientError, checked
from connectors.redact import redact

MAX_CELL = 200       # characters of one value in the text table (the data keeps up to MAX_DATA_CELL)
MAX_DATA_CELL = 2000
# Connection failures that retrying cannot fix: bad credentials, missing database or role.
_PERMANENT_CONNECT = ("password authentication failed", "authentication failed", "does not exist",
                      "no password supplied", "no pg_hba.conf entry")


class SqlConnector:
    name = "sql"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        p = checked(self.name, params)
        info = _conninfo(target, secrets, timeout)
        hidden = list(secrets.values())
        try:
            conn = psycopg.connect(info, autocommit=True)
        except psycopg.OperationalError as exc:
            message = redact(str(exc).strip(), hidden)
            if any(marker in message for marker in _PERMANENT_CONNECT):
                raise ConnectorError(f"connection refused by the server: {message}") from None
            raise TransientError(f"could not connect: {message}") from None
        with conn:
            conn.read_only = read_only   # BEGIN READ ONLY: the server refuses writes
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, true)", [f"{int(timeout * 1000)}ms"])
                    cur.execute(p["query"], p.get("params"))
                    columns = [c.name for c in cur.description] if cur.description else []
                    rows = cur.fetchmany(p["max_rows"] + 1) if cur.description else []
                    status, rowcount = cur.statusmessage or "", cur.rowcount
            except errors.QueryCanceled:
                return StepResult(ok=False, summary=f"timed out after {timeout:g}s (statement_timeout); "
                                                    "the transaction was rolled back")
            except psycopg.Error as exc:
                if exc.sqlstate is None:   # the connection broke mid-statement: it may have been committed
                    if read_only:
                        raise TransientError(f"connection lost: {redact(str(exc), hidden)}") from None
                    return StepResult(ok=False, summary="connection lost during the statement; it may have "
                                                        "been committed")
                message = exc.diag.message_primary or str(exc)
                return StepResult(ok=False, summary=redact(f"SQL error {exc.sqlstate}: {message}", hidden),
                                  data={"sqlstate": exc.sqlstate})
        return _result(status, columns, rows, rowcount, p["max_rows"], read_only)

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        p = checked(self.name, params)
        query = " ".join(p["query"].split())
        return f"would run `{query}` on {_where(target)}"


def _conninfo(target: dict[str, Any] | None, secrets: dict[str, str], timeout: float) -> str:
    if not target or not target.get("dsn"):
        raise ConnectorError("sql step needs a target with `dsn`")
    extra = {key: (secrets.get(key) or target.get(key)) for key in ("user", "password")
             if secrets.get(key) or target.get(key)}
    try:
        return conninfo.make_conninfo(str(target["dsn"]), connect_timeout=max(1, int(min(timeout, 30))),
                                      application_name="warroom", **extra)
    except psycopg.ProgrammingError:
        raise ConnectorError("target dsn is not a valid PostgreSQL connection string") from None


def _where(target: dict[str, Any] | None) -> str:
    """host/database of the target, never its credentials."""
    if not target or not target.get("dsn"):
        return "(no target)"
    try:
        parts = conninfo.conninfo_to_dict(str(target["dsn"]))
    except psycopg.ProgrammingError:
        return "(invalid dsn)"
    host = parts.get("host") or urlsplit(str(target["dsn"])).hostname or "localhost"
    if str(host).startswith("/"):
        host = "local socket"
    return f"{host}/{parts.get('dbname', '')}"


def _result(status: str, columns: list[str], rows: list[tuple], rowcount: int, max_rows: int,
            read_only: bool) -> StepResult:
    mode = "read-only" if read_only else "committed"
    if not columns:
        return StepResult(ok=True, summary=f"{status or 'OK'} ({rowcount} row(s) affected, {mode})",
                          data={"rowcount": rowcount, "columns": [], "rows": []})
    more = len(rows) > max_rows
    rows = rows[:max_rows]
    data_rows = [[_jsonable(v) for v in row] for row in rows]
    shown = f"{len(rows)}{'+' if more else ''} row(s)"
    summary = f"{shown}" + (f" (first {max_rows} shown)" if more else "") + f", {mode}"
    return StepResult(ok=True, summary=summary, output=_table(columns, data_rows, more),
                      data={"columns": columns, "rows": data_rows, "rowcount": rowcount, "truncated": more})


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:MAX_DATA_CELL]
    if isinstance(value, (dt.date, dt.time, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return "\\x" + bytes(value)[:MAX_DATA_CELL // 2].hex()
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return value if len(text) <= MAX_DATA_CELL else text[:MAX_DATA_CELL]
    return str(value)[:MAX_DATA_CELL]


def _table(columns: list[str], rows: list[list[Any]], more: bool) -> str:
    """A plain fixed-width table, as psql would print it."""
    def cell(v: Any) -> str:
        text = "NULL" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
        text = " ".join(text.split())
        return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{', more not shown' if more else ''})")
    return "\n".join(lines)
