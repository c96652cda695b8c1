"""The one record module: versioned, strict JSON, read back upgraded or refused with one line."""
import json

import pytest
import torch

from ibau.records import SCHEMA_VERSION, defense_outcome, new_record, read_record, write_record


def test_round_trip_carries_version_kind_definitions_and_environment(tmp_path):
    rec = new_record("defend", id="job", before={"acc": 0.9}, shape=(3, 8, 8), scalar=torch.tensor(0.5))
    path = write_record(tmp_path / "r.json", rec)
    back = read_record(path)
    assert back["schema_version"] == SCHEMA_VERSION and back["kind"] == "defend"
    assert back["shape"] == [3, 8, 8] and back["scalar"] == 0.5  # tuples as lists, 0-d tensors as numbers
    assert "asr" in back["definitions"] and "torch" in back["environment"]
    # the CPU, so "the same kind of machine" can be checked: torch's kernels follow the instruction set
    assert back["environment"]["cpu"] and back["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_a_value_json_cannot_hold_is_an_error_not_a_string(tmp_path):
    with pytest.raises(TypeError, match=r"record\.delta is a Tensor"):
        write_record(tmp_path / "r.json", new_record("defend", delta=torch.zeros(3)))
    assert not (tmp_path / "r.json").exists()


def test_old_grid_records_are_upgraded_and_newer_ones_refused(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"id": "defend-x", "kind": "defend", "record_version": 1, "status": "ok"}))
    rec = read_record(old)
    assert rec["schema_version"] == SCHEMA_VERSION and "record_version" not in rec and rec["status"] == "ok"
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="newer than this ibau's") as exc:
        read_record(newer)
    assert "\n" not in str(exc.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"status": "ok"')
    with pytest.raises(ValueError, match="is not a JSON record"):
        read_record(broken)
    with pytest.raises(ValueError, match="unknown record kind"):
        new_record("grid")


def test_a_clean_model_outcome_leaves_asr_fields_empty():
    from ibau.defenses import DefenseResult, make_defense

    defense = make_defense("finetune", epochs=1)
    result = DefenseResult(model=torch.nn.Identity(), seconds=1.5)
    out = defense_outcome(defense, result, {"acc": 0.9}, {"acc": 0.88})
    assert out["der"] is None and out["failed"] is None and out["defense_seconds"] == 1.5
    assert out["method"] == "finetune" and out["config"]["epochs"] == 1 and out["interrupted"] is False
