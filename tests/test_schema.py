"""migrations_schema/: one frozen JSON Schema and example documents per version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from convtree import CURRENT_SCHEMA_VERSION, ConversationState
from convtree.format import document_json_schema
from convtree.migrations import MIGRATIONS, upgrade_document

from .conftest import REPO, load_json

SCHEMAS = REPO / "migrations_schema"
VERSIONS = sorted(
    (p.name for p in SCHEMAS.iterdir() if p.is_dir()), key=lambda v: tuple(map(int, v.split(".")))
)
EXAMPLES = [(v, p) for v in VERSIONS for p in sorted((SCHEMAS / v / "examples").glob("*.json"))]


def validator(version: str) -> Draft202012Validator:
    schema = load_json(SCHEMAS / version / "schema.json")
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_every_version_of_the_chain_has_a_schema_folder() -> None:
    chain = [str(MIGRATIONS.validate()[0].from_version)] + [
        str(step.to_version) for step in MIGRATIONS.validate()
    ]
    assert chain == VERSIONS
    assert VERSIONS[-1] == CURRENT_SCHEMA_VERSION


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_has_examples(version: str) -> None:
    assert len(list((SCHEMAS / version / "examples").glob("*.json"))) >= 3


@pytest.mark.parametrize(("version", "path"), EXAMPLES, ids=[f"{v}/{p.name}" for v, p in EXAMPLES])
def test_example_matches_its_schema_and_migrates_to_a_valid_current_document(
    version: str, path: Path
) -> None:
    doc = load_json(path)
    errors = sorted(validator(version).iter_errors(doc), key=str)
    assert not errors, f"{path}: {errors[0].message} at {errors[0].json_path}"

    upgraded = upgrade_document(doc)
    errors = sorted(validator(CURRENT_SCHEMA_VERSION).iter_errors(upgraded), key=str)
    assert not errors, f"{path} migrated: {errors[0].message} at {errors[0].json_path}"

    state = ConversationState.from_dict(doc)
    saved = state.to_dict()
    assert not list(validator(CURRENT_SCHEMA_VERSION).iter_errors(saved))
    assert ConversationState.from_dict(saved) == state


MAJOR = CURRENT_SCHEMA_VERSION.split(".")[0]


@pytest.mark.parametrize("version", [v for v in VERSIONS if v.split(".")[0] != MAJOR])
def test_an_old_major_example_does_not_pass_as_the_current_format(version: str) -> None:
    doc = load_json(next((SCHEMAS / version / "examples").glob("*.json")))
    assert list(validator(CURRENT_SCHEMA_VERSION).iter_errors(doc))


@pytest.mark.parametrize("version", [v for v in VERSIONS if v.split(".")[0] == MAJOR])
def test_an_older_minor_example_is_a_valid_current_document(version: str) -> None:
    """Minor versions only add optional fields: a 2.0.0 document is a valid 2.1.0 one."""
    for path in sorted((SCHEMAS / version / "examples").glob("*.json")):
        assert not list(validator(CURRENT_SCHEMA_VERSION).iter_errors(load_json(path)))


def test_the_committed_current_schema_matches_the_models() -> None:
    """A format change needs a new version and a migration, not a silent model edit."""
    committed = load_json(SCHEMAS / CURRENT_SCHEMA_VERSION / "schema.json")
    generated = json.loads(json.dumps(document_json_schema()))
    assert generated == committed, (
        "the pydantic models no longer match migrations_schema/"
        f"{CURRENT_SCHEMA_VERSION}/schema.json. If the format really changed, add a new "
        "version folder, a migration step, and write its schema with `convtree schema`."
    )
