"""A catalogue run in fp32, then in bf16, on one prefix: bf16 redoes the track into a model folder of its own,
fp32's output stays as it was, `plan` counts the change of precision, and bf16's rerun skips; `separate` and
`evaluate` in bf16."""

import json

import numpy as np
import pyarrow.parquet as pq

from models import decoding
from pipeline import demo
from pipeline.cli import main
from pipeline.plan import plan
from pipeline.run import run
from tests import music
from tests.pipeline.conftest import write_manifest


def plan_counts(capsys, *args) -> str:
    assert plan(list(args)) == 0
    return capsys.readouterr().out


def files_under(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_change_of_precision_redoes_the_track_into_its_own_model_folder(tmp_path, checkpoint_2stems, capsys):
    demo.make_track(tmp_path / "t.wav", seconds=4.0, seed=2)
    manifest = write_manifest(tmp_path / "m.csv", [("t", "t.wav", "artist")])
    prefix = tmp_path / "prefix"
    args = ["--manifest", str(manifest), "--output", str(prefix), "--checkpoint", str(checkpoint_2stems)]
    assert run(args).exit_status == 0
    capsys.readouterr()
    (fp32_folder,) = (prefix / "stems").iterdir()
    fp32_stems, fp32_metadata = files_under(fp32_folder), files_under(prefix / "metadata")
    assert "bf16" not in fp32_folder.name and "+bf16" not in json.loads((fp32_folder / "t" / "_SUCCESS.json").read_text())["model"]

    assert "1 tracks to separate (0 new, 0 changed, 1 new-model, 0 new-encoding, 0 missing-stems, 0 forced), 0 up to date" in \
        plan_counts(capsys, *args, "--precision", "bf16")
    assert "0 tracks to separate" in plan_counts(capsys, *args, "--precision", "fp32")

    assert run([*args, "--precision", "bf16"]).exit_status == 0
    assert "1 tracks done, 0 skipped" in capsys.readouterr().out
    bf16_folder = prefix / "stems" / f"{fp32_folder.name}-bf16"
    assert sorted(p.name for p in (prefix / "stems").iterdir()) == sorted([fp32_folder.name, bf16_folder.name])
    card = json.loads((bf16_folder / "_MODEL.json").read_text())
    assert card["precision"] == "bf16" and "precision" not in json.loads((fp32_folder / "_MODEL.json").read_text())
    record = json.loads((bf16_folder / "t" / "_SUCCESS.json").read_text())
    assert record["model"].startswith("spleeter:2stems@sha256:") and record["model"].endswith("+bf16")
    assert sorted(record["stems"].values()) == sorted(str(bf16_folder / "t" / f"{n}.wav")
                                                      for n in ("vocals", "accompaniment"))
    (table,) = [pq.read_table(p) for p in (prefix / "metadata" / bf16_folder.name).glob("*.parquet")]
    assert set(table.column("model").to_pylist()) == {record["model"]}
    assert (bf16_folder / "t" / "vocals.wav").read_bytes() != (fp32_folder / "t" / "vocals.wav").read_bytes()
    # fp32's stems, records and metadata are untouched
    assert files_under(fp32_folder) == fp32_stems
    assert {k: v for k, v in files_under(prefix / "metadata").items() if not k.startswith(bf16_folder.name)} == \
        fp32_metadata

    assert "0 tracks to separate" in plan_counts(capsys, *args, "--precision", "bf16")
    assert run([*args, "--precision", "bf16"]).exit_status == 0
    assert "0 tracks done, 1 skipped" in capsys.readouterr().out
    assert run(args).exit_status == 0  # and fp32's track is still done
    assert "0 tracks done, 1 skipped" in capsys.readouterr().out


def test_separate_and_evaluate_take_the_precision(tmp_path, checkpoint_2stems, capsys):
    track = demo.make_track(tmp_path / "song.wav", seconds=4.0, seed=3)
    out = {}
    for precision in ("fp32", "bf16"):
        assert main(["separate", str(track), "-o", str(tmp_path / precision), "--checkpoint", str(checkpoint_2stems),
                     "--precision", precision, "--sample-format", "f32"]) == 0
        out[precision] = decoding.load(str(tmp_path / precision / "song" / "vocals.wav"), 44100)
    error = np.sum((out["bf16"].astype(np.float64) - out["fp32"]) ** 2)
    assert 0 < error and 10 * np.log10(np.sum(out["fp32"].astype(np.float64) ** 2) / error) > 35

    music.make_multitrack(tmp_path / "dataset" / "song", seconds=4.0, seed=4)
    assert main(["evaluate", "--dataset", str(tmp_path / "dataset"), "-o", str(tmp_path / "eval"),
                 "--checkpoint", str(checkpoint_2stems), "--precision", "bf16"]) == 0
    assert "+bf16: BSSEval v4" in capsys.readouterr().out
    models = pq.read_table(tmp_path / "eval" / "tracks.parquet").column("model").to_pylist()
    assert len(models) == 2 and all(m.endswith("+bf16") for m in models)
    assert [p.name for p in (tmp_path / "eval" / "separation" / "stems").iterdir()][0].endswith("-bf16")
