"""`beamsplitter plan`: the manifest of what a run must do, with reasons and counts."""

import json

from pipeline import demo
from pipeline.plan import plan
from pipeline.run import run
from tests.pipeline.conftest import write_manifest


def plan_rows(capsys, *args):
    assert plan(list(args)) == 0
    out = capsys.readouterr().out
    target = out.strip().splitlines()[-1].split("plan: ", 1)[1]
    with open(target) as f:
        return out, {row["track_id"]: row for row in map(json.loads, f)}


def test_plan_names_new_changed_and_new_model_tracks(tmp_path, checkpoint_2stems, random_checkpoint, capsys):
    folder = tmp_path / "cat"
    for i in range(3):
        demo.make_track(folder / f"t{i}.wav", seconds=4.0, seed=i)
    write_manifest(folder / "m.csv", [(f"t{i}", f"t{i}.wav", f"artist {i}") for i in range(2)])
    prefix = str(tmp_path / "prefix")
    two = ["--output", prefix, "--checkpoint", str(checkpoint_2stems)]
    assert run(["--manifest", str(folder / "m.csv"), *two]).exit_status == 0

    demo.make_track(folder / "t1.wav", seconds=5.0, seed=7)  # changed source
    rows = [(f"t{i}", f"t{i}.wav", f"artist {i}") for i in range(3)]  # t2 is new
    write_manifest(folder / "m.csv", rows + [("gone", "gone.wav", "x"), ("../up", "t0.wav", "y")])
    out, rows = plan_rows(capsys, "--manifest", str(folder / "m.csv"), *two)
    assert ("2 tracks to separate (1 new, 1 changed, 0 new-model, 0 new-encoding, 0 missing-stems, 0 forced), 1 up to date, "
            "2 would fail (decode: 1, validate: 1)") in out  # as a run would count them, and not planned
    assert {t: r["plan_reason"] for t, r in rows.items()} == {"t1": "changed", "t2": "new"}
    assert rows["t2"] == {"track_id": "t2", "uri": str(folder / "t2.wav"), "plan_reason": "new", "artist": "artist 2"}

    # the plan is a manifest: running it does that work and nothing else
    plan_file = tmp_path / "plan.jsonl"
    plan_file.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    assert run(["--manifest", str(plan_file), *two]).exit_status == 0
    assert "2 tracks done, 0 skipped" in capsys.readouterr().out

    out, rows = plan_rows(capsys, "--manifest", str(folder / "m.csv"), "--output", prefix, "-p", "spleeter:4stems",
                          "--checkpoint", str(random_checkpoint("spleeter:4stems")))
    assert "3 tracks to separate (0 new, 0 changed, 3 new-model, 0 new-encoding, 0 missing-stems, 0 forced), 0 up to date" in out

    out, rows = plan_rows(capsys, "--manifest", str(folder / "m.csv"), *two, "-c", "flac")
    assert "3 tracks to separate (0 new, 0 changed, 0 new-model, 3 new-encoding, 0 missing-stems, 0 forced), 0 up to date" in out
    out, rows = plan_rows(capsys, "--manifest", str(folder / "m.csv"), *two, "--force")
    assert "3 tracks to separate (0 new, 0 changed, 0 new-model, 0 new-encoding, 0 missing-stems, 3 forced)" in out
