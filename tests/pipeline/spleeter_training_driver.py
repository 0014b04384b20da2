"""Runs spleeter==2.4.2 on a checkpoint that ``beamsplitter train`` wrote, in the reference venv.

Usage: ``<reference venv>/bin/python spleeter_training_driver.py job.json``, where
``job.json`` holds ``params`` (the model folder's params.json, whose ``model_dir``
names the folder), ``input`` and ``output`` (as tests/parity/spleeter_driver.py:
Spleeter's ``Separator`` on the input, float32 stems saved to the ``.npz``),
``batch`` (an ``.npz`` of ``mix`` and one array per instrument, magnitudes
``[B, T, F, 2]``) and ``losses`` (a JSON file to write).

With the batch, Spleeter's own training graph (its ``model_fn`` in TRAIN mode,
as ``spleeter train`` builds it) is restored from the checkpoint; the JSON
gets its loss on the batch, then its loss on the same batch after one step of
its optimizer, and the Keras learning phase the graph trained under.

This file runs under the reference interpreter (TensorFlow 2.12, numpy<2):
it imports nothing from this repository.
"""

import json
import sys

import numpy as np
import tensorflow as tf
from spleeter.audio.adapter import AudioAdapter
from spleeter.model import model_fn
from spleeter.separator import Separator


def separate(job):
    separator = Separator(job["params"], MWF=False, multiprocess=False)
    waveform, _ = AudioAdapter.default().load(job["input"], sample_rate=separator._sample_rate)
    stems = separator.separate(waveform)
    np.savez(job["output"], waveform=waveform, **{k: np.asarray(v, np.float32) for k, v in stems.items()})


def training_losses(job):
    params = json.load(open(job["params"]))
    batch = np.load(job["batch"])
    checkpoint = tf.train.latest_checkpoint(params["model_dir"])
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.create_global_step()
        shape = [None, params["T"], params["F"], params["n_channels"]]
        mix = tf.compat.v1.placeholder(tf.float32, shape)
        labels = {f"{name}_spectrogram": tf.compat.v1.placeholder(tf.float32, shape)
                  for name in params["instrument_list"]}
        spec = model_fn({f"{params['mix_name']}_spectrogram": mix}, labels, tf.estimator.ModeKeys.TRAIN, params)
        stored = dict(tf.train.list_variables(checkpoint))
        network = [v for v in tf.compat.v1.global_variables() if v.op.name in stored]
        restore = tf.compat.v1.train.Saver(var_list=network)
        feed = {mix: batch["mix"]}
        feed.update({labels[f"{name}_spectrogram"]: batch[name] for name in params["instrument_list"]})
        phase = graph.get_tensor_by_name("keras_learning_phase:0")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            restore.restore(session, checkpoint)
            before = session.run(spec.loss, feed)
            session.run(spec.train_op, feed)
            after = session.run(spec.loss, feed)
            learning_phase = bool(session.run(phase))
    json.dump({"before": float(before), "after": float(after), "restored": len(network),
               "learning_phase": learning_phase}, open(job["losses"], "w"))


def main(spec_path: str) -> None:
    job = json.load(open(spec_path))
    separate(job)
    training_losses(job)


if __name__ == "__main__":
    main(sys.argv[1])
