"""`cti crm import`: rejected rows with line numbers, duplicates as merge suggestions, batch
atomicity, exactly-once resume. Real SQLite files (and PostgreSQL with CTI_TEST_PG_URL)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.adapter import Identity
from crm_bridge.csvio import LayoutError
from crm_bridge.importer import (
    ImportOptions,
    ImportUsageError,
    SimulatedCrash,
    default_paths,
    import_csv,
)
from crm_bridge.models import Customer, CustomFieldValue, Email, ExternalId, Phone
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _template_outside_the_loop(sqlite_template: Path) -> None:
    """conftest's sqlite_template calls asyncio.run; build it before any async fixture runs."""


def report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


async def count(engine: AsyncEngine, table: Any = Customer) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(Customer.name).order_by(Customer.id))).scalars())


async def test_broken_rows_are_rejected_with_line_and_reason_good_rows_land(
    engine: AsyncEngine, crm_settings: CrmSettings, crm: BuiltinCrm, tmp_path: Path
) -> None:
    src = tmp_path / "broken.csv"
    shutil.copyfile(DATA / "broken.csv", src)
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=4))
    assert res.complete and not res.failed
    assert (res.rows, res.imported, res.rejected, res.duplicates) == (12, 3, 9, 0)
    assert await names(engine) == ["Anna Schmidt", "Frieda Multiline", "Hanna Good"]

    rejects = {int(r["line"]): r["reason"] for r in report(default_paths(src)[0])}
    assert sorted(rejects) == [3, 4, 5, 6, 7, 10, 12, 13, 14]
    assert rejects[3].startswith("phone:") and "'12'" in rejects[3]
    assert rejects[4] == "name is empty"
    assert rejects[5].startswith("cf_since:") and "31.01.2020" in rejects[5]
    assert rejects[6] == "street: longer than 200 characters (250)"
    assert rejects[7] == "expected 10 fields, found 11"
    # line 8-9 is one record (quoted newline), so the badly encoded row is physical line 10
    assert rejects[10] == "not valid UTF-8 (byte 0xE4)"
    assert rejects[12].startswith("cf_tier:") and "bronze" in rejects[12]
    assert rejects[13].startswith("email:")
    assert rejects[14].startswith("phone_kind:") and "pager" in rejects[14]

    # what landed is normalized and findable through the adapter
    found = await crm.identify(Identity(number="030 1234567"))
    assert found.status == "one" and found.card is not None
    assert found.card.name == "Anna Schmidt"
    frieda = await crm.identify(Identity(number="+49309990050"))
    assert frieda.status == "one" and frieda.card is not None
    assert frieda.card.name == "Frieda Multiline"
    hanna = await crm.identify(Identity(ivr={"account": "A-9"}))
    assert hanna.card is not None and hanna.card.name == "Hanna Good"
    async with engine.connect() as conn:
        emails = set((await conn.execute(select(Email.email))).scalars())
        assert emails == {"anna@example.org", "frieda@example.org", "hanna@example.org"}
        kinds = {e: k for e, k in await conn.execute(select(Phone.e164, Phone.kind))}
        assert kinds == {
            "+49301234567": "landline",
            "+49309990050": "other",
            "+4915123456789": "mobile",
        }
        values = (await conn.execute(select(func.count()).select_from(CustomFieldValue))).scalar()
        assert values == 3  # Anna: since + tier, Frieda: tier


async def test_duplicates_within_file_and_against_database_become_merge_suggestions(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    header = "name,phone,email,account,card"
    first = write(
        tmp_path / "first.csv", header, ["Existing Kunde,+4930555001,ex@example.org,K-1,"]
    )
    assert (await import_csv(engine, first, crm_settings)).imported == 1
    async with engine.connect() as conn:
        existing_id = (await conn.execute(select(Customer.id))).scalar_one()

    rows = [
        "Same Number Other Format,030 555001,,,",  # 2: DB, by number
        "Fresh One,+4930555002,fresh@example.org,K-2,C-2",  # 3: new
        "Same Mail Upper,+4930555003,FRESH@example.org,,",  # 4: same batch as 3, by e-mail
        "Fresh Two,+4930555004,,K-4,",  # 5: new (next batch)
        "Same Account Later,,,K-2,",  # 6: earlier batch of this file -> in DB now
        "Same Card,+4930555006,,,C-2",  # 7
        "Unrelated,+4930555007,,,",  # 8: new
    ]
    second = write(tmp_path / "second.csv", header, rows)
    res = await import_csv(engine, second, crm_settings, ImportOptions(batch_size=3))
    assert (res.imported, res.duplicates, res.rejected) == (3, 4, 0)
    assert await names(engine) == ["Existing Kunde", "Fresh One", "Fresh Two", "Unrelated"]
    merges = report(default_paths(second)[1])
    got = {(int(m["line"]), m["match"], m["value"], m["source"]) for m in merges}
    assert got == {
        (2, "phone", "+4930555001", "database"),
        (4, "email", "fresh@example.org", "line 3"),
        (6, "account", "K-2", "database"),
        (7, "card", "C-2", "database"),
    }
    by_line = {int(m["line"]): m for m in merges}
    assert by_line[2]["customer_id"] == str(existing_id)
    assert by_line[6]["customer_id"] == by_line[7]["customer_id"] != ""
    # nothing was imported twice
    assert await count(engine, Phone) == 4
    assert await count(engine, ExternalId) == 4  # K-1, K-2, C-2, K-4


async def test_importing_the_same_file_twice_imports_nothing_new(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    src = write(
        tmp_path / "a.csv",
        "name,phone,email",
        [f"Person {i},+49305550{i:02d},p{i}@example.org" for i in range(20)],
    )
    assert (await import_csv(engine, src, crm_settings)).imported == 20
    again = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=7))
    assert (again.imported, again.duplicates) == (0, 20)
    assert await count(engine) == 20


async def _install_boom_trigger(engine: AsyncEngine) -> None:
    """A database-level failure the importer cannot foresee: inserting a customer named BOOM."""
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON crm_customer WHEN NEW.name = 'BOOM' "
                "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                "IF NEW.name = 'BOOM' THEN RAISE EXCEPTION 'boom refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON crm_customer "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )


async def _drop_boom_trigger(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "DROP TRIGGER boom"
            if conn.dialect.name == "sqlite"
            else "DROP TRIGGER boom ON crm_customer"
        )
        if conn.dialect.name != "sqlite":
            await conn.exec_driver_sql("DROP FUNCTION boom()")


async def test_a_batch_the_database_refuses_is_rolled_back_whole_then_resumed(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    rows = [f"Person {i},+49306660{i:02d},,A-{i}" for i in range(1, 8)]
    rows[4] = "BOOM,+4930666005,,A-5"
    rows.insert(3, "Bad,12,,")  # batches: lines 2-4, 5-7 (Bad, Person 4, BOOM), 8-9
    src = write(tmp_path / "boom.csv", "name,phone,email,account", rows)
    await _install_boom_trigger(engine)
    try:
        res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=3))
        assert not res.complete
        assert "lines 5-7" in res.failed and "boom refused" in res.failed
        # the first batch is in, nothing of the second (its good rows neither)
        assert await names(engine) == ["Person 1", "Person 2", "Person 3"]
        assert await count(engine, Phone) == 3
        assert report(default_paths(src)[0]) == []  # the failed batch's reject is not kept
        with pytest.raises(ImportUsageError, match="--resume"):
            await import_csv(engine, src, crm_settings)
    finally:
        await _drop_boom_trigger(engine)
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=3, resume=True))
    assert res.complete and res.resumed_at_line == 4
    assert await names(engine) == [f"Person {i}" for i in (1, 2, 3, 4)] + [
        "BOOM",
        "Person 6",
        "Person 7",
    ]
    assert [r["line"] for r in report(default_paths(src)[0])] == ["5"]
    assert (res.rows, res.imported, res.rejected) == (8, 7, 1)


def _rows_for_resume() -> list[str]:
    rows = []
    for i in range(1, 26):
        if i % 6 == 0:
            rows.append(f"Broken {i},not-a-number,,")
        elif i == 17:
            rows.append("Dup Of One,+4930777001,,")  # duplicate of row 1
        else:
            rows.append(f"Person {i},+4930777{i:03d},p{i}@example.org,K{i}")
    return rows


@pytest.mark.parametrize(
    ("point", "batch"), [("before_commit", 3), ("after_commit", 2), ("after_commit", 5)]
)
async def test_resume_after_a_crash_imports_every_row_exactly_once(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path, point: str, batch: int
) -> None:
    src = write(tmp_path / "big.csv", "name,phone,email,account", _rows_for_resume())

    def crash(where: str, n: int) -> None:
        if where == point and n == batch:
            raise SimulatedCrash(f"{where} {n}")

    with pytest.raises(SimulatedCrash):
        await import_csv(engine, src, crm_settings, ImportOptions(batch_size=5, crash_hook=crash))
    committed = batch if point == "after_commit" else batch - 1
    assert await count(engine) == committed * 5 - _not_imported_before(committed)
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=5, resume=True))
    assert res.complete
    expected = [f"Person {i}" for i in range(1, 26) if i % 6 != 0 and i != 17]
    assert await names(engine) == expected
    assert await count(engine, Phone) == len(expected)
    # the reports hold each reject and each merge suggestion exactly once
    rejects = [int(r["line"]) for r in report(default_paths(src)[0])]
    assert rejects == [7, 13, 19, 25]
    merges = [(int(m["line"]), m["match"]) for m in report(default_paths(src)[1])]
    assert merges == [(18, "phone")]
    assert (res.rows, res.imported, res.rejected, res.duplicates) == (25, 20, 4, 1)


def _not_imported_before(batches: int) -> int:
    """Rows of the first ``batches`` batches (5 rows each) that are not customers."""
    skipped = [i for i in range(1, 26) if i % 6 == 0 or i == 17]
    return sum(1 for i in skipped if i <= batches * 5)


async def test_stop_after_k_batches_then_resume(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    src = write(tmp_path / "big.csv", "name,phone,email,account", _rows_for_resume())
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=4, max_batches=2))
    assert not res.complete and res.rows == 8
    assert await count(engine) == 7  # row 6 is broken
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=4, resume=True))
    assert res.complete and res.resumed_at_line == 9
    assert await count(engine) == 20
    # resuming a finished import changes nothing
    again = await import_csv(engine, src, crm_settings, ImportOptions(resume=True))
    assert again.complete and await count(engine) == 20


async def test_resume_refuses_another_file_or_missing_state(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    src = write(tmp_path / "a.csv", "name,phone", [f"P {i},+4930888{i:03d}" for i in range(10)])
    with pytest.raises(ImportUsageError, match="nothing to resume"):
        await import_csv(engine, src, crm_settings, ImportOptions(resume=True))
    await import_csv(engine, src, crm_settings, ImportOptions(batch_size=3, max_batches=1))
    write(src, "name,phone", [f"Q {i},+4930889{i:03d}" for i in range(10)])
    with pytest.raises(ImportUsageError, match="not the file"):
        await import_csv(engine, src, crm_settings, ImportOptions(resume=True))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("kind,phone", "no 'name' column"),
        ("name,phone,fax_number", "unknown column 'fax_number'"),
        ("name,phone,phone", "appears twice"),
        ("name,cf_undefined", "no custom field 'undefined' is defined"),
        ("name,cf_x:colour", "unknown field type"),
        ("name,phone2_kind", "without a column phone2"),
    ],
)
async def test_headers_that_cannot_be_imported_are_refused_before_any_write(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path, header: str, message: str
) -> None:
    src = write(tmp_path / "h.csv", header, ["Anna,+4930111222"])
    with pytest.raises(LayoutError, match=message):
        await import_csv(engine, src, crm_settings)
    assert await count(engine) == 0


async def test_header_type_must_match_an_existing_field_definition(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    a = write(tmp_path / "a.csv", "name,cf_since:date", ["Anna,2020-01-01"])
    assert (await import_csv(engine, a, crm_settings)).new_fields == ["since"]
    b = write(tmp_path / "b.csv", "name,cf_since:number", ["Bert,12"])
    with pytest.raises(LayoutError, match="defined as"):
        await import_csv(engine, b, crm_settings)
    # without a type in the header the existing definition is used
    c = write(tmp_path / "c.csv", "name,cf_since", ["Carl,2021-02-03", "Dora,gestern"])
    res = await import_csv(engine, c, crm_settings)
    assert (res.imported, res.rejected) == (1, 1)


async def test_empty_file_and_header_only(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(LayoutError, match="empty"):
        await import_csv(engine, empty, crm_settings)
    only = write(tmp_path / "only.csv", "\ufeffname,phone", [])
    res = await import_csv(engine, only, crm_settings)
    assert res.complete and res.rows == 0


@pytest.mark.parametrize(
    "name", ["Anna Müller", "  Jörg   van der Straße ", "Ölwerk", "", "Ñandú Co."]
)
def test_bulk_name_keys_follow_the_store_rules(name: str) -> None:
    from crm_bridge import normalize
    from crm_bridge.batchrules import NAME_COLUMNS, name_values

    rules = {"name_key": normalize.search_key, "name_rkey": normalize.search_key_last_first}
    assert name_values(name) == tuple(rules[c](name) for c in NAME_COLUMNS)


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            [*"aAßÖöéE ", "\u0301", "\u00a8", "\u00a0", "\u2002", "\ufb01", "\u1e9e", "\t"]
        ),
        max_size=12,
    )
)
def test_word_by_word_name_keys_equal_the_whole_name_rule(name: str) -> None:
    """name_values builds the key word by word from a memo: the same as the store's rule
    on the whole name, even with combining marks, compatibility spaces and ligatures."""
    from crm_bridge import normalize
    from crm_bridge.batchrules import name_values

    assert name_values(name)[0] == normalize.search_key(name)
    assert name_values(name)[-1] == normalize.search_key_last_first(name)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(
                [*"aAßÖöéE ", "\u0301", "\u00a8", "\u00a0", "\u2002", "\ufb01", "\u1e9e", "\t"]
            ),
            max_size=12,
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_a_column_of_name_keys_equals_the_keys_name_by_name(names: list[str], nul: bool) -> None:
    """The bulk loader computes the keys of a whole column at once (name_columns): the same
    keys as name_values gives each name, also for names of only white space or marks, for
    keys cut at the length limit and for a name holding the joining character."""
    from crm_bridge.batchrules import name_columns, name_values

    names = [*names, "Ab " * 80]  # a key longer than the limit
    if nul:
        names.append("x\x00y z")
    keys, rkeys = name_columns(names)
    assert list(zip(keys, rkeys, strict=True)) == [name_values(n) for n in names]


async def test_semicolon_file_from_a_spreadsheet_and_an_unclosed_quote(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    src = tmp_path / "excel.csv"
    src.write_text(
        "name;phone;cf_limit:number\nAnna Müller;030 1234567;1,5\nBert, Consulting;0301234568;2\n",
        encoding="utf-8",
    )
    res = await import_csv(engine, src, crm_settings)
    assert (res.imported, res.rejected) == (2, 0)
    assert await names(engine) == ["Anna Müller", "Bert, Consulting"]
    async with engine.connect() as conn:
        limits = sorted(
            v or 0.0 for v in (await conn.execute(select(CustomFieldValue.value_number))).scalars()
        )
    assert limits == [1.5, 2.0]
    src2 = tmp_path / "quote.csv"
    src2.write_text('name,phone\nDora,+4930777000\n"Emil,+4930777001\nFrida,+4930777002\n')
    res2 = await import_csv(engine, src2, crm_settings)
    assert (res2.imported, res2.rejected) == (1, 1)
    (reject,) = report(default_paths(src2)[0])
    assert reject["line"] == "3" and "lines 3-4" in reject["reason"]


@pytest.mark.slow
async def test_parsing_in_a_second_process_gives_the_same_import(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    """Big files are read and validated in a child process: same rejects (line numbers),
    merges, rows and exactly-once resume after a crash as the in-process path."""
    src = write(tmp_path / "big.csv", "name,phone,email,account", _rows_for_resume())

    def crash(where: str, n: int) -> None:
        if where == "before_commit" and n == 3:
            raise SimulatedCrash(f"{where} {n}")

    opts = ImportOptions(batch_size=5, crash_hook=crash, parse_process=True)
    with pytest.raises(SimulatedCrash):
        await import_csv(engine, src, crm_settings, opts)
    assert await count(engine) == 2 * 5 - _not_imported_before(2)
    opts = ImportOptions(batch_size=5, resume=True, parse_process=True)
    res = await import_csv(engine, src, crm_settings, opts)
    assert res.complete and not res.failed
    expected = [f"Person {i}" for i in range(1, 26) if i % 6 != 0 and i != 17]
    assert await names(engine) == expected
    rejects = [int(r["line"]) for r in report(default_paths(src)[0])]
    assert rejects == [7, 13, 19, 25]
    merges = [(int(m["line"]), m["match"]) for m in report(default_paths(src)[1])]
    assert merges == [(18, "phone")]
    assert (res.rows, res.imported, res.rejected, res.duplicates) == (25, 20, 4, 1)

    broken = tmp_path / "broken.csv"
    shutil.copyfile(DATA / "broken.csv", broken)
    res = await import_csv(
        engine, broken, crm_settings, ImportOptions(batch_size=4, parse_process=True)
    )
    assert (res.rows, res.imported, res.rejected, res.duplicates) == (12, 3, 9, 0)
    assert sorted(int(r["line"]) for r in report(default_paths(broken)[0])) == [
        3, 4, 5, 6, 7, 10, 12, 13, 14,
    ]  # fmt: skip


async def test_sqlite_foreign_keys_are_back_on_after_an_import(
    engine: AsyncEngine, crm_settings: CrmSettings, tmp_path: Path
) -> None:
    """The import switches SQLite's FK checks off per batch; every pooled connection must
    have them on again afterwards (cascading deletes depend on it), even after a failure."""
    if engine.dialect.name != "sqlite":
        pytest.skip("a SQLite pragma")
    src = write(tmp_path / "a.csv", "name,phone,email,account", _rows_for_resume()[:12])

    def crash(where: str, n: int) -> None:
        if where == "before_commit" and n == 2:
            raise SimulatedCrash(where)

    opts = ImportOptions(batch_size=3, crash_hook=crash)
    with pytest.raises(SimulatedCrash):
        await import_csv(engine, src, crm_settings, opts)
    res = await import_csv(engine, src, crm_settings, ImportOptions(batch_size=3, resume=True))
    assert res.complete and res.imported > 0
    conns = [await engine.connect() for _ in range(3)]
    try:
        for conn in conns:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        for conn in conns:
            await conn.close()
    # and they act: deleting a customer removes its numbers
    async with engine.begin() as conn:
        first = (await conn.execute(select(func.min(Customer.id)))).scalar()
        await conn.execute(Customer.__table__.delete().where(Customer.id == first))
        left = (
            await conn.execute(
                select(func.count()).select_from(Phone).where(Phone.customer_id == first)
            )
        ).scalar()
    assert left == 0
