"""Price book files: the shipped default parses, export and parse round-trip in JSON and YAML,
a malformed file is refused whole naming the offending line or key path, and the
`creditline pricebook load/export` commands load nothing from a bad file, round-trip a good
one and load the same file only once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from billing_service import cli
from billing_service.db.engine import build_engine
from billing_service.pricing.price_book_file import (
    DEFAULT_PATH,
    PriceBookFileError,
    dump,
    parse,
    read,
)

MODEL: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o",
    "input_per_mtok": "2.50",
    "cached_input_per_mtok": "1.25",
    "output_per_mtok": "10.00",
    "source": "https://openai.com/api/pricing",
    "as_of": "2026-03-21",
}
IMAGE: dict[str, Any] = {
    "provider": "openai",
    "model": "dall-e-3",
    "per_unit": "0.04",
    "unit": "image",
    "source": "https://openai.com/api/pricing",
    "as_of": "2026-02-01",
}
TIER: dict[str, Any] = {
    "name": "TIER_1A",
    "base_fee": "10",
    "fee_unit": "scenario",
    "description": "per scenario",
}


def document(**changes: Any) -> dict[str, Any]:
    base = {
        "credit_usd": "0.001",
        "markup": "0.2",
        "note": "test book",
        "tiers": [TIER],
        "models": [MODEL, IMAGE],
    }
    return {**base, **changes}


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2)


def refusal(text_: str, *, yaml_syntax: bool = False) -> str:
    with pytest.raises(PriceBookFileError) as caught:
        parse(text_, name="book", yaml_syntax=yaml_syntax)
    return str(caught.value)


# --- the shipped default ----------------------------------------------------------------------


def test_default_book_parses_with_sources() -> None:
    book = read(DEFAULT_PATH)
    providers = {m.provider for m in book.models}
    assert len(providers) >= 7
    assert len(book.models) >= 30
    for m in book.models:
        assert m.source.startswith("https://"), f"{m.provider}/{m.model} has no source"
        assert len(m.as_of) == 10, f"{m.provider}/{m.model} has no as_of"
        date.fromisoformat(m.as_of)
    assert book.credit_usd == Decimal("0.001")
    assert {t.name for t in book.tiers} >= {"TIER_1A", "TIER_1B"}
    assert [(m.provider, m.model) for m in book.models] == sorted(
        (m.provider, m.model) for m in book.models
    )


@pytest.mark.parametrize("yaml_syntax", [False, True], ids=["json", "yaml"])
def test_export_then_parse_round_trips(yaml_syntax: bool) -> None:
    for book in (read(DEFAULT_PATH), parse(as_json(document()), name="b", yaml_syntax=False)):
        again = parse(dump(book, yaml_syntax=yaml_syntax), name="b", yaml_syntax=yaml_syntax)
        assert again == book
        # prices stay exact strings, never floats: "0.80" survives as 0.80
        assert [m.input_per_mtok for m in again.models] == [m.input_per_mtok for m in book.models]


@pytest.mark.parametrize("yaml_syntax", [False, True], ids=["json", "yaml"])
def test_export_of_sub_micro_prices_round_trips(yaml_syntax: bool) -> None:
    tiny = {**IMAGE, "model": "tts", "per_unit": "0.0000005", "unit": "character"}
    book = parse(as_json(document(models=[MODEL, tiny])), name="b", yaml_syntax=False)
    again = parse(dump(book, yaml_syntax=yaml_syntax), name="export", yaml_syntax=yaml_syntax)
    assert again == book


def test_small_book_values() -> None:
    book = parse(as_json(document()), name="b", yaml_syntax=False)
    assert (book.version, book.credit_usd, book.markup, book.note) == (
        0,
        Decimal("0.001"),
        Decimal("0.2"),
        "test book",
    )
    assert [(m.model, m.per_unit, m.unit) for m in book.models] == [
        ("dall-e-3", Decimal("0.04"), "image"),
        ("gpt-4o", None, ""),
    ]
    assert book.tiers[0].base_fee == 10_000_000
    assert book.models[1].reasoning_per_mtok is None


def test_yaml_file_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "book.yml"
    path.write_text(dump(parse(as_json(document()), name="b", yaml_syntax=False), yaml_syntax=True))
    assert len(read(path).models) == 2
    when = datetime(2026, 12, 1, tzinfo=UTC)
    assert read(path, effective_at=when).effective_at == when


# --- malformed files ------------------------------------------------------------------------------


def test_bad_json_names_the_line() -> None:
    broken = '{\n  "credit_usd": "0.001",\n  "models": [\n  }\n'
    assert "book: line 4: not valid JSON" in refusal(broken)


def test_yaml_syntax_error_names_the_line() -> None:
    broken = 'credit_usd: "0.001"\nmodels:\n  - provider: openai\n    model: gpt\n  oops: "1"\n'
    assert "book: line 5: not valid YAML" in refusal(broken, yaml_syntax=True)


def test_unquoted_yaml_number_names_the_key_path() -> None:
    unquoted = 'credit_usd: "0.001"\nmodels:\n  - provider: openai\n    model: gpt\n'
    message = refusal(unquoted + "    input_per_mtok: 2.50\n", yaml_syntax=True)
    assert "models[0].input_per_mtok" in message
    assert "quoted" in message
    dated = 'credit_usd: "0.001"\nmodels:\n  - {provider: a, model: b, input_per_mtok: "1",'
    assert "models[0].as_of" in refusal(dated + " as_of: 2026-01-01}\n", yaml_syntax=True)


def test_unquoted_json_number_is_refused_naming_the_key_path() -> None:
    unquoted = as_json(document(models=[MODEL, {**IMAGE, "per_unit": 0.04}]))
    message = refusal(unquoted)
    assert "models[1].per_unit" in message
    assert "must be a quoted decimal string" in message


BAD_CONTENT: list[tuple[str, dict[str, Any], str]] = [
    (
        "negative price",
        document(models=[{**MODEL, "input_per_mtok": "-2.50"}]),
        "book: models[0].input_per_mtok: must be a plain decimal",
    ),
    (
        "exponent price",
        document(models=[MODEL, {**MODEL, "model": "x", "output_per_mtok": "1e3"}]),
        "book: models[1].output_per_mtok:",
    ),
    ("unknown model key", document(models=[{**MODEL, "colour": "red"}]), "models[0].colour"),
    ("unknown top key", document(currency="EUR"), "currency: is not a known key"),
    (
        "missing provider",
        document(models=[{k: v for k, v in MODEL.items() if k != "provider"}]),
        "book: models[0].provider: is required",
    ),
    (
        "bad provider",
        document(models=[{**MODEL, "provider": "Open AI"}]),
        "book: models[0].provider:",
    ),
    (
        "duplicate model",
        document(models=[MODEL, IMAGE, {**MODEL, "input_per_mtok": "3"}]),
        "book: models[2]: repeats openai/gpt-4o",
    ),
    (
        "per_unit without unit",
        document(models=[{k: v for k, v in IMAGE.items() if k != "unit"}]),
        "book: models[0].unit:",
    ),
    ("unknown unit", document(models=[{**IMAGE, "unit": "token"}]), "book: models[0].unit:"),
    (
        "unit without per_unit",
        document(models=[{**MODEL, "unit": "image"}]),
        "book: models[0].unit:",
    ),
    (
        "no price at all",
        document(models=[{"provider": "openai", "model": "free"}]),
        "book: models[0]: must set at least one price",
    ),
    ("bad as_of", document(models=[{**MODEL, "as_of": "March 2026"}]), "models[0].as_of"),
    ("tier with bad name", document(tiers=[{**TIER, "name": "tier 1a"}]), "book: tiers[0].name:"),
    ("tier bad fee", document(tiers=[{**TIER, "base_fee": "-10"}]), "book: tiers[0].base_fee:"),
    ("duplicate tier", document(tiers=[TIER, TIER]), "book: tiers[1].name: repeats TIER_1A"),
    ("empty models", document(models=[]), "book: models: must be a non-empty list"),
    ("no models", {"credit_usd": "0.001"}, "book: models: must be a non-empty list"),
    ("missing credit value", document(credit_usd=None), "book: credit_usd: is required"),
    ("zero credit value", document(credit_usd="0"), "book: credit_usd:"),
    ("absurd markup", document(markup="11"), "book: markup:"),
    ("model not a mapping", document(models=["gpt-4o"]), "book: models[0]: must be a mapping"),
]


@pytest.mark.parametrize(("case", "doc", "expected"), BAD_CONTENT, ids=[b[0] for b in BAD_CONTENT])
@pytest.mark.parametrize("yaml_syntax", [False, True], ids=["json", "yaml"])
def test_bad_content_is_refused_naming_the_key_path(
    case: str, doc: dict[str, Any], expected: str, yaml_syntax: bool
) -> None:
    source = yaml.safe_dump(doc, sort_keys=False) if yaml_syntax else as_json(doc)
    assert expected in refusal(source, yaml_syntax=yaml_syntax)


def test_top_level_must_be_a_mapping() -> None:
    assert "must be a mapping" in refusal("[]")
    assert "must be a mapping" in refusal("", yaml_syntax=True)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceBookFileError, match="cannot read"):
        read(tmp_path / "missing.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"note": "caf\xe9"}')
    with pytest.raises(PriceBookFileError, match="cannot read"):
        read(latin)


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A SQLite database the CLI uses through CREDITLINE_DATABASE_URL; restores logging after,
    since the CLI installs its own root handler."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CREDITLINE_DATABASE_URL", url)
    monkeypatch.setenv("CREDITLINE_LOG_FORMAT", "text")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield url
    root.handlers[:] = handlers
    root.setLevel(level)


def versions(url: str) -> list[int]:
    engine = build_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version FROM price_books ORDER BY version"))
            return [int(r[0]) for r in rows]
    finally:
        engine.dispose()


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(as_json(doc), encoding="utf-8")
    return path


EFFECTIVE = "2026-01-01T00:00:00+00:00"


def test_cli_load_then_export_yaml_round_trips(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "book.json", document())
    assert cli.main(["pricebook", "load", str(source), "--effective", EFFECTIVE]) == 0
    out = capsys.readouterr().out
    assert "loaded as price book version 1: 2 models, 1 tiers" in out
    exported = tmp_path / "out.yaml"
    assert cli.main(["pricebook", "export", "--format", "yaml", "--output", str(exported)]) == 0
    assert "price book version 1 written to" in capsys.readouterr().out
    original, again = read(source), read(exported)
    assert again == original
    # JSON on standard output, by version number
    assert cli.main(["pricebook", "export", "--version", "1"]) == 0
    printed = parse(capsys.readouterr().out, name="stdout", yaml_syntax=False)
    assert printed == original
    assert versions(cli_db) == [1]


def test_cli_load_keeps_the_note_and_effective_time(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "book.json", document(note=""))
    args = ["pricebook", "load", str(source), "--effective", EFFECTIVE, "--note", "May prices"]
    assert cli.main(args) == 0
    assert f"effective {EFFECTIVE}" in capsys.readouterr().out
    assert cli.main(["pricebook", "export"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] == "May prices"


def test_cli_loading_the_same_file_twice_makes_one_version(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "book.json", document())
    args = ["pricebook", "load", str(source), "--effective", EFFECTIVE]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert "was already loaded as price book version 1" in capsys.readouterr().out
    assert versions(cli_db) == [1]


def test_cli_loading_the_same_file_twice_without_effective_makes_one_version(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "book.json", document())
    assert cli.main(["pricebook", "load", str(source)]) == 0
    assert cli.main(["pricebook", "load", str(source)]) == 0
    assert "already loaded" in capsys.readouterr().out
    assert versions(cli_db) == [1]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "negative.json",
            as_json(document(models=[MODEL, {**IMAGE, "per_unit": "-0.04"}])),
            "models[1].per_unit",
        ),
        ("unknown.json", as_json(document(models=[{**MODEL, "price": "1"}])), "models[0].price"),
        ("broken.json", '{\n"credit_usd": "0.001",\n"models": [,]\n}', "line 3"),
        (
            "unquoted.yaml",
            'credit_usd: "0.001"\nmodels:\n  - provider: openai\n    model: gpt-4o\n'
            "    input_per_mtok: 2.50\n",
            "models[0].input_per_mtok",
        ),
    ],
)
def test_cli_load_of_a_bad_file_exits_1_naming_the_key_and_loads_nothing(
    cli_db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    expected: str,
) -> None:
    good = write(tmp_path / "good.json", document())
    assert cli.main(["pricebook", "load", str(good), "--effective", EFFECTIVE]) == 0
    capsys.readouterr()
    bad = tmp_path / name
    bad.write_text(content, encoding="utf-8")
    assert cli.main(["pricebook", "load", str(bad)]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert "nothing was loaded" in err
    assert versions(cli_db) == [1]


def test_cli_load_of_a_bad_file_into_an_empty_database_loads_nothing(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.json", document(tiers=[{**TIER, "name": "lower"}]))
    assert cli.main(["pricebook", "load", str(bad)]) == 1
    assert "tiers[0].name" in capsys.readouterr().err
    assert versions(cli_db) == []


def test_cli_export_of_a_missing_version_exits_1(cli_db: str, tmp_path: Path) -> None:
    source = write(tmp_path / "book.json", document())
    assert cli.main(["pricebook", "load", str(source), "--effective", EFFECTIVE]) == 0
    assert cli.main(["pricebook", "export", "--version", "7"]) == 1
