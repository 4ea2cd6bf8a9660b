"""Bundled models: export (float16 safetensors + JSON record), loading, integrity, the shipped set."""
import json
import stat

import pytest
import torch

from smdim.bundled import (DEFAULT_STYLE, SUMMARY_ROWS, bundled_models, evaluation_summary, export_model, find_bundled,
                           float16_check, load_bundled, update_record)
from smdim.checkpoint import CheckpointError, ema_weights, load_checkpoint
from smdim.data import DataRecord
from smdim.model import SMDIM, SMDIMConfig
from smdim.pipeline import UserError, corpus_of_record, load_run
from smdim.tokenizer import decode, mask_id, tokenizer_from_dict


def _evaluation():
    cell = {"value": 0.5, "low": 0.4, "high": 0.6}
    table = {row: {"SMDIM": cell, "transformer": cell, "real vs real": cell, "SMDIM − transformer": cell}
             for row in SUMMARY_ROWS}
    table["invalid tokens"] = {"SMDIM": 0.03, "transformer": 0.2, "real vs real": 0.0}
    table["copy rate (16-gram, transposition-invariant)"] = {"SMDIM": 0.1}
    return {"table": table, "notes": ["Test set: ..."],
            "columns": ["SMDIM", "transformer", "real vs real", "SMDIM − transformer"]}


@pytest.fixture(scope="module")
def bundle(checkpoint, cache_dir, tmp_path_factory):
    """(folder, checkpoint state, float16 check) of the tiny test run exported as a bundled model."""
    state = load_checkpoint(checkpoint)
    corpus, _ = corpus_of_record(DataRecord.from_dict(state["data"]), tokenizer_from_dict(state["tokenizer"]),
                                 cache_dir=cache_dir)
    check = float16_check(state, corpus, 64, n_boot=20)
    folder = tmp_path_factory.mktemp("bundle")
    export_model(state, checkpoint, folder, name="tiny", styles=["han"], training={"steps": 3},
                 evaluation=evaluation_summary(_evaluation(), "SMDIM", "test"), dtype_check=check)
    return folder, state, check


def test_float16_check_measures_both_precisions(bundle):
    _, _, check = bundle
    assert check["test_windows"] > 0
    assert check["nll_float32"] > 0 and check["nll_float16"] > 0
    diff = check["float16_minus_float32"]
    assert diff["low"] <= diff["value"] <= diff["high"]
    assert diff["value"] == pytest.approx(check["nll_float16"] - check["nll_float32"])
    assert abs(diff["value"]) < 0.01


def test_export_writes_float16_safetensors_and_a_readable_record(bundle, checkpoint):
    folder, state, _ = bundle
    record = json.loads((folder / "tiny.json").read_text())
    assert record["styles"] == ["han"] and record["dtype"] == "float16"
    assert record["data"]["seq_len"] == 64 and record["data"]["splits"] == state["data"]["splits"]
    assert record["model_config"] == state["model_config"]
    assert record["parameters"] == sum(v.numel() for v in ema_weights(state).values())
    from safetensors.torch import load_file

    weights = load_file(str(folder / "tiny.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float16}
    assert set(weights) == set(ema_weights(state))
    for path in (folder / "tiny.json", folder / "tiny.safetensors"):
        assert path.stat().st_mode & stat.S_IROTH      # package data others can read (not mkstemp's 0600)


def test_loaded_model_is_the_float16_rounded_checkpoint(bundle, checkpoint):
    folder, state, _ = bundle
    run = load_bundled("han", folder=folder)
    assert run.style == "han" and run.seq_len == 64 and run.record.splits == load_run(checkpoint).record.splits
    reference = SMDIM(SMDIMConfig.from_dict(state["model_config"]))
    reference.load_state_dict({k: v.half().float() for k, v in ema_weights(state).items()})
    x = torch.randint(4, 200, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(run.model(x), reference.eval()(x))
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


def test_update_record_adds_fields_and_keeps_the_rest(bundle, tmp_path):
    folder, _, _ = bundle
    copy = tmp_path / "tiny.json"
    copy.write_bytes((folder / "tiny.json").read_bytes())
    update_record(copy, evaluation_at_defaults={"model": {}})
    record = json.loads(copy.read_text())
    assert record["evaluation_at_defaults"] == {"model": {}}
    assert {k: v for k, v in record.items() if k != "evaluation_at_defaults"} == json.loads(
        (folder / "tiny.json").read_text())


def test_styles_and_errors(bundle, tmp_path):
    folder, _, _ = bundle
    assert [m.name for m in bundled_models(folder)] == ["tiny"]
    assert find_bundled(None, folder).name == "tiny"
    with pytest.raises(UserError, match="--style: no bundled model plays 'jazz'; bundled styles: han"):
        find_bundled("jazz", folder)
    with pytest.raises(UserError, match="no bundled model is installed"):
        find_bundled(None, tmp_path)
    # a tampered weights file is refused before it is used
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tiny.json", "tiny.safetensors"):
        (broken / name).write_bytes((folder / name).read_bytes())
    data = bytearray((broken / "tiny.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (broken / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their record"):
        load_bundled("han", folder=broken)
    record = json.loads((broken / "tiny.json").read_text())
    (broken / "tiny.json").write_text(json.dumps(dict(record, format=99)))
    with pytest.raises(CheckpointError, match="bundled-model format 99"):
        bundled_models(broken)


def test_evaluation_summary_keeps_the_model_the_baseline_and_real_vs_real():
    summary = evaluation_summary(_evaluation(), "SMDIM", "studies/x")
    assert set(summary["model"]) == set(SUMMARY_ROWS.values())
    assert summary["baseline"]["name"] == "transformer" and summary["baseline"]["invalid_tokens"] == 0.2
    assert summary["real_vs_real"]["invalid_tokens"] == 0.0
    assert summary["protocol"] == ["Test set: ..."] and summary["source"] == "studies/x"


# ---------------------------------------------------------------------------------------------
# what ships in the package
# ---------------------------------------------------------------------------------------------
SHIPPED = bundled_models()


def test_the_default_style_ships():
    assert any(DEFAULT_STYLE in m.styles for m in SHIPPED)


@pytest.mark.parametrize("bundled", SHIPPED, ids=[m.name for m in SHIPPED])
def test_shipped_model_loads_plays_and_records_its_evaluation(bundled):
    record = bundled.record
    assert bundled.weights.stat().st_size < 8e6                     # small enough for the repository
    assert abs(record["float16_check"]["float16_minus_float32"]["value"]) < 0.005
    model_eval, real = record["evaluation"]["model"], record["evaluation"]["real_vs_real"]
    assert 0 < model_eval["mean_attribute_oa"]["value"] <= 1 and 0 < real["mean_attribute_oa"]["value"] <= 1
    assert record["evaluation"]["protocol"][0].startswith("Test set: the recorded test split")
    at_defaults = record["evaluation_at_defaults"]                 # the shipped model as users sample it
    assert "32 denoising steps, confidence unmasking order" in at_defaults["protocol"][0]
    assert 0 < at_defaults["model"]["mean_attribute_oa"]["value"] <= 1
    assert record["training"]["seed"] == 0 and record["training"]["steps"] > 0
    run = load_bundled(bundled.styles[0])
    from smdim.sampling import generate

    ids = generate(run.model, 1, 96, steps=8, mask_id=mask_id(run.tokenizer),
                   generator=torch.Generator().manual_seed(0))[0].tolist()
    assert decode(run.tokenizer, ids).note_num() > 0
