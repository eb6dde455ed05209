"""The migration chain: named steps, versions compared as versions, nothing mutated."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from packaging.version import Version

from convtree import CURRENT_SCHEMA_VERSION, ConversationState, FormatError, SchemaVersionError
from convtree.migrations import (
    MIGRATIONS,
    Migration,
    MigrationChain,
    MigrationChainError,
    parse_schema_version,
    upgrade_document,
)

from .conftest import REFERENCE_DOCS, load_json


def _step(a: str, b: str) -> Migration:
    return Migration(Version(a), Version(b), f"m_{a}_{b}", lambda doc: dict(doc))


class TestChain:
    def test_the_chain_is_complete_and_named(self) -> None:
        ordered = MIGRATIONS.validate()
        assert [(str(s.from_version), str(s.to_version)) for s in ordered] == [
            ("0.0.0", "1.0.0"),
            ("1.0.0", "1.1.0"),
            ("1.1.0", "2.0.0"),
            ("2.0.0", "2.1.0"),
        ]
        assert all(s.name.startswith("m") and s.func.__doc__ for s in ordered)
        assert str(ordered[-1].to_version) == CURRENT_SCHEMA_VERSION

    def test_a_gap_is_detected(self) -> None:
        chain = MigrationChain("2.0.0", [_step("0.0.0", "1.0.0"), _step("1.1.0", "2.0.0")])
        with pytest.raises(MigrationChainError, match="one chain"):
            chain.validate()

    def test_a_cycle_is_detected(self) -> None:
        chain = MigrationChain(
            "2.0.0", [_step("0.0.0", "1.0.0"), _step("1.0.0", "2.0.0"), _step("2.0.0", "1.0.0")]
        )
        with pytest.raises(MigrationChainError):
            chain.validate()

    def test_a_detached_cycle_is_detected(self) -> None:
        chain = MigrationChain(
            "2.0.0",
            [_step("0.0.0", "2.0.0"), _step("1.0.0", "1.5.0"), _step("1.5.0", "1.7.0")],
        )
        with pytest.raises(MigrationChainError):
            chain.validate()

    def test_two_steps_from_one_version_are_detected(self) -> None:
        chain = MigrationChain("2.0.0", [_step("0.0.0", "2.0.0"), _step("0.0.0", "1.0.0")])
        with pytest.raises(MigrationChainError, match=r"two migrations start at 0\.0\.0"):
            chain.validate()

    def test_a_chain_must_end_at_the_current_version(self) -> None:
        chain = MigrationChain("3.0.0", [_step("0.0.0", "2.0.0")])
        with pytest.raises(MigrationChainError, match=r"ends at 2\.0\.0"):
            chain.validate()

    def test_registering_a_step(self) -> None:
        chain = MigrationChain("1.0.0")

        @chain.register("0.0.0", "1.0.0")
        def m_first(doc: Any) -> dict[str, Any]:
            return {**doc, "schema_version": "1.0.0", "added": True}

        assert chain.upgrade({"x": 1}) == {"x": 1, "schema_version": "1.0.0", "added": True}


class TestVersions:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [(None, "0.0.0"), ("1.0", "1.0.0"), ("1.10.0", "1.10.0"), ("2", "2.0.0")],
    )
    def test_parse(self, text: str | None, expected: str) -> None:
        assert parse_schema_version(text) == Version(expected)

    @pytest.mark.parametrize(
        "bad", ["", "abc", "1.0.0.0", "01.0.0", "v2.0.0", "2.0.0rc1", 2.0, ["2"]]
    )
    def test_invalid_versions(self, bad: object) -> None:
        with pytest.raises(SchemaVersionError, match="schema_version"):
            parse_schema_version(bad)

    def test_versions_compare_as_versions_not_strings(self) -> None:
        """Reference defect 4: "1.10.0" >= "1.9.0" was False."""
        assert parse_schema_version("1.10.0") > parse_schema_version("1.9.0")
        assert parse_schema_version("2.10.0") > parse_schema_version(CURRENT_SCHEMA_VERSION)

    def test_a_newer_major_version_is_refused(self) -> None:
        with pytest.raises(SchemaVersionError, match=r"newer than this convtree reads \(2\.x\)"):
            upgrade_document({"schema_version": "3.0.0"})

    @pytest.mark.parametrize("version", ["1.2.0", "0.5.0"])
    def test_an_unknown_old_version_is_refused(self, version: str) -> None:
        with pytest.raises(SchemaVersionError, match=f"no migration from schema_version {version}"):
            upgrade_document({"schema_version": version})

    def test_a_two_part_version_reads_as_three(self) -> None:
        """Reference defect 4: "1.0" crashed."""
        doc = load_json(REFERENCE_DOCS / "simple_chain" / "v1.0.0.json")
        doc["schema_version"] = "1.0"
        assert len(ConversationState.from_dict(doc)) == 5

    def test_a_patch_release_migrates_like_its_minor(self) -> None:
        doc = load_json(REFERENCE_DOCS / "tool_calls" / "v1.0.0.json")
        doc["schema_version"] = "1.0.3"
        state = ConversationState.from_dict(doc)
        assert state.get_node("0.0").message.tool_calls  # type: ignore[union-attr]


class TestNewerMinor:
    def _newer(self) -> dict[str, Any]:
        state = ConversationState("c")
        state.add_message("user", "hi", node_id="u")
        doc = state.to_dict()
        doc["schema_version"] = "2.7.0"
        doc["retention"] = {"days": 30}
        doc["nodes"][1]["rating"] = 5
        doc["nodes"][1]["message"]["refusal"] = None
        return doc

    def test_loads_and_keeps_unknown_fields_and_its_label(self) -> None:
        doc = self._newer()
        state = ConversationState.from_dict(doc)
        state.add_message("assistant", "hello", node_id="a")
        out = state.to_dict()
        assert out["schema_version"] == "2.7.0"
        assert out["retention"] == {"days": 30}
        record = next(n for n in out["nodes"] if n["node_id"] == "u")
        assert record["rating"] == 5
        assert record["message"] == {"role": "user", "content": "hi", "refusal": None}
        assert ConversationState.from_dict(out) == state

    def test_a_current_document_with_a_two_part_version(self) -> None:
        doc = self._newer()
        doc["schema_version"] = "2.0"
        version = ConversationState.from_dict(doc).to_dict()["schema_version"]
        assert version == CURRENT_SCHEMA_VERSION


class TestSteps:
    def test_migrations_do_not_mutate_their_input(self) -> None:
        for path in sorted(REFERENCE_DOCS.glob("*/v*.json")):
            doc = load_json(path)
            before = copy.deepcopy(doc)
            upgraded = upgrade_document(doc)
            assert doc == before, path
            assert upgraded["schema_version"] == CURRENT_SCHEMA_VERSION

    def test_upgrading_a_current_document_is_a_copy(self) -> None:
        doc = ConversationState().to_dict()
        upgraded = upgrade_document(doc)
        assert upgraded == doc
        assert upgraded is not doc

    def test_sibling_order_comes_from_positional_ids(self) -> None:
        doc = load_json(REFERENCE_DOCS / "regenerated" / "v1.1.0.json")
        doc["edges"].reverse()
        upgraded = upgrade_document(doc)
        assert [e for e in upgraded["edges"] if e[0] == "0"] == [
            ["0", "0.0"],
            ["0", "0.1"],
            ["0", "0.2"],
        ]

    def test_non_positional_ids_keep_their_edge_order(self) -> None:
        doc = load_json(REFERENCE_DOCS / "simple_chain" / "v1.1.0.json")
        doc["nodes"].append({**doc["nodes"][1], "node_id": "custom"})
        doc["edges"].insert(0, ["", "custom"])
        upgraded = upgrade_document(doc)
        assert [e for e in upgraded["edges"] if e[0] == ""] == [["", "custom"], ["", "0"]]

    def test_10_sorts_after_9(self) -> None:
        doc = load_json(REFERENCE_DOCS / "simple_chain" / "v1.1.0.json")
        template = doc["nodes"][2]
        for k in (10, 9, 1):
            doc["nodes"].append({**template, "node_id": f"0.{k}"})
            doc["edges"].append(["0", f"0.{k}"])
        upgraded = upgrade_document(doc)
        assert [e[1] for e in upgraded["edges"] if e[0] == "0"] == ["0.0", "0.1", "0.9", "0.10"]

    def test_missing_content_reads_as_empty_text(self) -> None:
        doc = load_json(REFERENCE_DOCS / "simple_chain" / "v1.1.0.json")
        del doc["nodes"][1]["message"]["content"]
        assert ConversationState.from_dict(doc).get_node("0").content == ""

    def test_aware_timestamps_are_kept(self) -> None:
        doc = load_json(REFERENCE_DOCS / "simple_chain" / "v1.1.0.json")
        doc["nodes"][1]["timestamp"] = "2025-03-01T12:00:00+05:00"
        state = ConversationState.from_dict(doc)
        assert state.get_node("0").timestamp.isoformat() == "2025-03-01T12:00:00+05:00"

    @pytest.mark.parametrize(
        "corrupt",
        [
            lambda d: d.update(nodes="nope"),
            lambda d: d.update(edges=[["", "0", "x"]]),
            lambda d: d["nodes"].append(7),
            lambda d: d["nodes"][1].update(message="text"),
            lambda d: d["nodes"][1].update(metadata=[]),
            lambda d: d.update(created_at=5),
        ],
    )
    def test_malformed_old_documents_raise_format_error(self, corrupt: Any) -> None:
        doc = load_json(REFERENCE_DOCS / "tool_calls" / "v1.0.0.json")
        corrupt(doc)
        with pytest.raises(FormatError):
            ConversationState.from_dict(doc)

    @pytest.mark.parametrize("doc", [None, [], "text", 3])
    def test_a_non_object_document(self, doc: object) -> None:
        with pytest.raises(FormatError, match="JSON object"):
            ConversationState.from_dict(doc)  # type: ignore[arg-type]
