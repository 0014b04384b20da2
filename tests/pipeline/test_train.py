"""``beamsplitter train`` end to end, on synthetic tracks with their stems (tests.music).

* from fresh weights, a small U-Net (2 stems, T=64, F=256, few filters): the
  loss over the training set falls; the tensorflow-transform step leaves out
  the crops of a silent track; the checkpoint loads in ``beamsplitter
  separate`` and in spleeter==2.4.2, whose stems match at >= 60 dB, and whose
  own training graph computes the same loss, and the same loss after one Adam
  step, as beamsplitter's trainer;
* fine-tuning the released 2stems weights (T=64, full F) raises the median
  BSSEval SDR of both stems on held-out tracks;
* training data on gs:// (an emulator on loopback), prepared in waves with
  ``--augment``, gives exactly the crops ``models.crops`` makes from the local
  files; a second run on the same model folder continues its checkpoint and
  its loss curve;
* unusable rows (a missing stem, a file that is not audio, a stem shorter
  than its mixture) stop the command with one line naming each file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

from models import decoding, examples
from models.bsseval import bss_eval
from models.checkpoint import read_weights
from models.config import load_config
from models.crops import CropSampling, crops
from models.provider import load_separator
from models.training import Trainer, TrainingParams, initial_weights
from models.unet import variable_shapes
from pipeline.cli import main
from tests import music, services
from transforms.crop_levels import keep_filter
from transforms.catalogue.training_manifest import read_training_manifest
from transforms.training_set import load_sources

pytestmark = pytest.mark.slow  # training runs, Spleeter's own among them

SECONDS = 6.0
TRACKS = 4
CROPS_PER_CHUNK = 4
HELD_OUT_SEEDS = (900, 901)
SEED = 1
MIN_SNR_DB = 60.0
DRIVER = Path(__file__).with_name("spleeter_training_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def spleeter_config(path: Path, **changes) -> Path:
    """The 2stems configuration, changed: a full Spleeter JSON, so Spleeter itself accepts it."""
    params = json.loads((ROOT / "models" / "configs" / "2stems.json").read_text())
    params.update(changes)
    path.write_text(json.dumps(params, indent=1))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """``train.csv``: four 6 s tracks with their vocals and accompaniment, and a silent fifth."""
    folder = tmp_path_factory.mktemp("trainset")
    manifest = music.make_training_set(folder, tracks=TRACKS, seconds=SECONDS)
    silence = np.zeros((int(SECONDS * 44100), 2), np.float32)
    for name in ("mixture", "vocals", "accompaniment"):
        music.write_wav(folder / "silence" / f"{name}.wav", silence, 44100)
    with open(manifest, "a") as f:
        f.write(f"silence/mixture.wav,silence/vocals.wav,silence/accompaniment.wav,{SECONDS:g}\n")
    return manifest


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> list[tuple[Path, np.ndarray, dict[str, np.ndarray]]]:
    """Tracks no training saw: ``(wav path, mixture [n, 2], {instrument: stem [n, 2]})``."""
    folder = tmp_path_factory.mktemp("held-out")
    tracks = []
    for seed in HELD_OUT_SEEDS:
        mix = music.synthesize(SECONDS, seed)
        tracks.append((music.write_wav(folder / f"held-{seed}.wav", mix, 44100), mix, music.synthesize_stems(SECONDS, seed)))
    return tracks


def train(*args: str) -> int:
    return main(["train", "--seed", str(SEED), "--crops-per-chunk", str(CROPS_PER_CHUNK), *args])


@pytest.fixture(scope="module")
def scratch(dataset, tmp_path_factory) -> tuple[Path, Path]:
    """A small U-Net trained from fresh weights: ``(config, model folder)``."""
    folder = tmp_path_factory.mktemp("scratch")
    config = spleeter_config(folder / "small.json", T=64, F=256, batch_size=4, learning_rate=1e-3,
                             model={"type": "unet.unet", "params": {"conv_n_filters": [8, 16, 32, 64, 128, 256]}})
    model = folder / "model"
    assert train("--config", str(config), "--dataset", str(dataset), "-o", str(model), "--steps", "60") == 0
    return config, model


def load_batches(model: Path, config_path: Path):
    """Every record of the training set, and those the transform graph keeps, as ``(mix, targets)`` arrays."""
    config = load_config(str(config_path))
    parse = examples.parser(config)
    files = sorted(str(p) for p in (model / "trainset" / "records").glob("*.tfrecord"))
    records = [parse(r) for r in tf.data.TFRecordDataset(files)]
    keep = keep_filter(str(model / "trainset" / "transform_fn"))
    kept = [e for e in records if bool(keep(e))]

    def arrays(chosen):
        return (np.stack([e[examples.MIX].numpy() for e in chosen]),
                np.stack([np.stack([e[name].numpy() for e in chosen]) for name in config.instruments]))

    return config, records, arrays(kept)


def test_training_from_fresh_weights_lowers_the_loss(scratch):
    config_path, model = scratch
    stats = json.loads((model / "trainset" / "stats.json").read_text())
    # Four crops from each of the five tracks; tensorflow-transform's level,
    # relative to the set's mean power, leaves out the silent track's four.
    assert (stats["crops"], stats["kept"]) == (5 * CROPS_PER_CHUNK, TRACKS * CROPS_PER_CHUNK)
    config, examples, (mix, targets) = load_batches(model, config_path)
    assert len(examples) == stats["crops"] and len(mix) == stats["kept"]
    assert all(float(np.max(m)) > 0 for m in mix)

    history = json.loads((model / "history.json").read_text())
    assert history["first_step"] == 0 and len(history["loss"]) == 60
    assert np.mean(history["loss"][-10:]) < 0.9 * np.mean(history["loss"][:10]), history["loss"]
    # The loss over the whole training set, at the fresh weights training started from and at the trained ones.
    params = TrainingParams.of(config)
    before = Trainer(config, initial_weights(config, SEED), params).loss(mix, targets)
    after = Trainer(config, read_weights(model, config), params).loss(mix, targets)
    print(f"training-set loss: {before:.4f} at fresh weights, {after:.4f} after 60 steps")
    assert after < 0.8 * before
    assert (model / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((model / "params.json").read_text())["model_dir"] == str(model.resolve())


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = np.asarray(reference, np.float64)
    error = np.sum((np.asarray(estimate, np.float64) - reference) ** 2)
    return math.inf if error == 0 else 10 * math.log10(np.sum(reference ** 2) / error)


def test_trained_checkpoint_separates_and_trains_alike_in_spleeter(scratch, held_out, reference_venv, tmp_path):
    config_path, model = scratch
    params_file = model / "params.json"
    wav = held_out[0][0]
    # beamsplitter separate, on the model folder's own params.json (its model_dir names the folder).
    assert main(["separate", str(wav), "-o", str(tmp_path / "ours"), "-p", str(params_file),
                 "--sample-format", "f32"]) == 0
    config, _, (mix, targets) = load_batches(model, config_path)
    batch = tmp_path / "batch.npz"
    np.savez(batch, mix=mix[:4], **{name: targets[k, :4] for k, name in enumerate(config.instruments)})
    job = {"params": str(params_file), "input": str(wav), "output": str(tmp_path / "spleeter.npz"),
           "batch": str(batch), "losses": str(tmp_path / "losses.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = subprocess.run([str(reference_venv / "bin" / "python"), str(DRIVER), str(tmp_path / "job.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    reference = np.load(tmp_path / "spleeter.npz")
    stems = {}
    for name in config.instruments:
        stems[name] = decoding.load(str(tmp_path / "ours" / wav.stem / f"{name}.wav"), 44100)
        snr = snr_db(reference[name], stems[name])
        print(f"{name}: beamsplitter vs spleeter==2.4.2 {snr:.1f} dB")
        assert snr >= MIN_SNR_DB, (name, snr)
    assert snr_db(stems["vocals"], stems["accompaniment"]) < 20  # two different stems, not one mask twice

    # Spleeter's training graph on the same checkpoint and batch: its loss, and its loss after one step of
    # its optimizer, are beamsplitter's. It trained under Keras' default learning phase, inference.
    spleeter = json.loads((tmp_path / "losses.json").read_text())
    trainer = Trainer(config, read_weights(model, config), TrainingParams.of(config))
    before = trainer.loss(mix[:4], targets[:, :4])
    trainer.step(mix[:4], targets[:, :4])
    after = trainer.loss(mix[:4], targets[:, :4])
    print(f"loss on one batch, beamsplitter / spleeter: {before:.6f} / {spleeter['before']:.6f}, "
          f"after one Adam step {after:.6f} / {spleeter['after']:.6f}")
    assert spleeter["restored"] == len(variable_shapes(config)) + 1  # every variable, and global_step
    assert spleeter["learning_phase"] is False
    assert before == pytest.approx(spleeter["before"], rel=1e-5)
    assert after == pytest.approx(spleeter["after"], rel=1e-4)
    assert after < before


def held_out_sdr(separator, held_out) -> np.ndarray:
    """Median BSSEval v4 SDR per instrument over 1 s frames, averaged over the held-out tracks."""
    per_track = []
    for _, mix, stems in held_out:
        estimates = separator.separate(mix)
        names = separator.instruments
        metrics = bss_eval(np.stack([stems[n] for n in names]), np.stack([estimates[n] for n in names]))
        per_track.append(np.nanmedian(metrics.sdr, axis=1))
    return np.mean(per_track, axis=0)


def test_fine_tuning_released_weights_raises_held_out_sdr(dataset, held_out, checkpoint_2stems, tmp_path):
    config = spleeter_config(tmp_path / "finetune.json", T=64, batch_size=4)
    model = tmp_path / "model"
    before = held_out_sdr(load_separator(str(config), str(checkpoint_2stems)), held_out)
    assert train("--config", str(config), "--dataset", str(dataset), "--init", "spleeter:2stems",
                 "-o", str(model), "--steps", "20") == 0
    after = held_out_sdr(load_separator(str(model / "params.json")), held_out)
    print(f"held-out median SDR (vocals, accompaniment): {before.round(2)} dB released, {after.round(2)} dB fine-tuned")
    assert np.all(after > before), (before, after)
    parsed = load_config(str(config))
    released, tuned = read_weights(checkpoint_2stems, parsed), read_weights(model, parsed)
    assert all(np.array_equal(tuned[n], released[n]) for n in released if "moving_" in n)
    assert not np.array_equal(tuned["conv2d/kernel"], released["conv2d/kernel"])


TINY_UNET = {"type": "unet.unet", "params": {"conv_n_filters": [4, 8, 8, 16, 16, 32]}}


@pytest.fixture(scope="module")
def remote_model(dataset, tmp_path_factory) -> tuple[Path, Path, str]:
    """Three tracks of ``dataset`` on gs://, trained 3 steps with ``--augment`` in waves of two tracks:
    ``(config, model folder, its standard error)``."""
    folder = tmp_path_factory.mktemp("remote")
    config = spleeter_config(folder / "tiny.json", T=64, F=64, batch_size=4, model=TINY_UNET)
    lines = dataset.read_text().splitlines()[:4]  # the header and three songs, paths relative to the manifest
    with services.gcs_emulator() as gcs:
        for line in lines[1:]:
            for path in line.split(",")[:3]:
                with FileSystems.create(gcs.url(f"data/{path}")) as out:
                    out.write((dataset.parent / path).read_bytes())
        with FileSystems.create(gcs.url("data/train.csv")) as out:
            out.write(("\n".join(lines) + "\n").encode())
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = train("--config", str(config), "--dataset", gcs.url("data/train.csv"), "-o", str(folder / "model"),
                           "--steps", "3", "--augment", "--local_wave_tracks", "2")
    assert status == 0, err.getvalue()
    return config, folder / "model", err.getvalue()


def test_remote_data_in_waves_gives_exactly_the_augmented_crops(remote_model, dataset):
    config_path, model, _ = remote_model
    config = load_config(str(config_path))
    files = sorted((model / "trainset" / "records").glob("*.tfrecord"))
    assert {f.name[:5] for f in files} == {"w0000", "w0001"}  # two waves: two songs, then one
    parse = examples.parser(config)
    written = {e[examples.KEY].numpy().decode(): e for e in map(parse, tf.data.TFRecordDataset([str(f) for f in files]))}
    augmented = CropSampling(20.0, 2, CROPS_PER_CHUNK, SEED, augment=True)
    expected = {}
    for track in read_training_manifest(str(dataset), config.instruments)[:3]:
        sources = load_sources(track, config.sample_rate)
        expected.update(crops(sources, config, augmented, track.name))
        plain = dict(crops(sources, config, CropSampling(20.0, 2, CROPS_PER_CHUNK, SEED), track.name))
        assert not any(np.allclose(plain[key][examples.MIX], expected[key][examples.MIX]) for key in plain)
    assert sorted(written) == sorted(expected) and len(expected) == 3 * CROPS_PER_CHUNK
    for key, spectrograms in expected.items():
        for name, value in spectrograms.items():
            np.testing.assert_array_equal(written[key][name].numpy(), value, err_msg=f"{key} {name}")
    stats = json.loads((model / "trainset" / "stats.json").read_text())
    assert (stats["crops"], stats["kept"]) == (3 * CROPS_PER_CHUNK, 3 * CROPS_PER_CHUNK)


def test_a_second_run_continues_the_model_folder_and_its_loss_curve(remote_model, dataset, capsys):
    config_path, model, _ = remote_model
    config = load_config(str(config_path))
    first = json.loads((model / "history.json").read_text())
    weights = read_weights(model, config)
    curve = (model / "loss.png").read_bytes()
    capsys.readouterr()
    assert train("--config", str(config_path), "--dataset", str(dataset), "-o", str(model), "--steps", "2") == 0
    assert "2 steps continuing" in capsys.readouterr().err
    history = json.loads((model / "history.json").read_text())
    assert history["first_step"] == 0 and len(history["loss"]) == 5 and history["loss"][:3] == first["loss"]
    assert int(tf.train.load_checkpoint(str(model / "model")).get_tensor("global_step")) == 5
    assert not np.array_equal(read_weights(model, config)["conv2d/kernel"], weights["conv2d/kernel"])
    assert (model / "loss.png").read_bytes() != curve


def test_a_data_dir_tensorflow_cannot_read_is_refused_before_any_work(dataset, tmp_path, capsys):
    config = spleeter_config(tmp_path / "tiny.json", T=64, F=64, model=TINY_UNET)
    assert train("--config", str(config), "--dataset", str(dataset), "-o", str(tmp_path / "model"),
                 "--data-dir", "s3://bucket/trainset") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("error: s3://bucket/trainset: training reads the records with TensorFlow, "
                                            "which cannot open s3:// here (give a local folder or gs://)")
    assert "Traceback" not in err and not (tmp_path / "model").exists()


def test_unusable_rows_stop_training_naming_each_file(dataset, tmp_path, capsys):
    source = dataset.parent / "song-01"
    (tmp_path / "notes.wav").write_text("no music here\n" * 40)
    music.write_wav(tmp_path / "short.wav", np.zeros((44100, 2), np.float32), 44100)
    rows = [
        [source / "mixture.wav", source / "vocals.wav", source / "accompaniment.wav"],
        [source / "mixture.wav", "gone.wav", source / "accompaniment.wav"],
        [source / "mixture.wav", source / "vocals.wav", "notes.wav"],
        [source / "mixture.wav", "short.wav", source / "accompaniment.wav"],
    ]
    manifest = tmp_path / "bad.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mix_path", "vocals_path", "accompaniment_path"])
        writer.writerows(rows)
    config = spleeter_config(tmp_path / "small.json", T=64, F=256)
    capsys.readouterr()
    assert train("--config", str(config), "--dataset", str(manifest), "-o", str(tmp_path / "model")) == 2
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: 3 of 4 training tracks unusable:"), err
    assert f"row 2: {tmp_path / 'gone.wav'}: no such file" in message
    assert f"row 3: {tmp_path / 'notes.wav'}: not decodable audio" in message
    assert f"row 4: {tmp_path / 'short.wav'}: 44100 samples at 44100 Hz, but the mixture" in message
    assert "Traceback" not in err
    assert not (tmp_path / "model" / "model.index").exists()

    (tmp_path / "columns.csv").write_text("mix_path,vocals_path\nsong-01/mixture.wav,song-01/vocals.wav\n")
    assert train("--config", str(config), "--dataset", str(tmp_path / "columns.csv"), "-o", str(tmp_path / "m")) == 2
    assert "columns.csv row 1: no column accompaniment_path" in capsys.readouterr().err


def test_a_trained_model_is_named_after_its_folder_and_a_moved_one_says_where_it_looked(tmp_path, capsys):
    # A model folder as `train` leaves it: the checkpoint, and params.json whose model_dir points at the folder.
    from models.checkpoint import random_weights, write_checkpoint

    model = tmp_path / "my-model"
    config_path = spleeter_config(tmp_path / "small.json", T=64, F=256,
                                  model={"type": "unet.unet", "params": {"conv_n_filters": [8, 16, 32, 64, 128, 256]}})
    write_checkpoint(model, random_weights(load_config(str(config_path)), seed=0, scale=0.01))
    spleeter_config(model / "params.json", T=64, F=256, model_dir=str(model),
                    model={"type": "unet.unet", "params": {"conv_n_filters": [8, 16, 32, 64, 128, 256]}})
    assert load_config(str(model / "params.json")).name == "my-model"
    assert load_config(f"file://{model}/params.json").name == "my-model"
    assert load_separator(str(model / "params.json")).config.name == "my-model"
    moved = tmp_path / "moved"
    model.rename(moved)
    music.make_track(tmp_path / "a.wav", seconds=1.0)
    assert main(["separate", "-p", str(moved / "params.json"), str(tmp_path / "a.wav"), "-o", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert f"my-model: no weights in {model}, where its configuration's model_dir points" in err, err
    assert "download" not in err and "Traceback" not in err
