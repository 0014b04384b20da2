"""Runs spleeter==2.4.2's Python API on a list of jobs, in the reference venv.

Usage: ``<reference venv>/bin/python spleeter_driver.py jobs.json`` with
``MODEL_PATH`` pointing at a folder that holds every job's model directory.
``jobs.json`` is a list of ``{"params": "spleeter:4stems", "input": "a.wav",
"output": "a.npz"}``; each output ``.npz`` holds ``waveform`` (what Spleeter's
audio adapter decoded, float32 ``[n, channels]``) and one float32 ``[n, 2]``
array per instrument, as ``Separator.separate`` returned it.

This file runs under the reference interpreter (TensorFlow 2.12, numpy<2):
it imports nothing from this repository.
"""

import json
import sys
import time

import numpy as np
from spleeter.audio.adapter import AudioAdapter
from spleeter.separator import Separator


def main(spec_path: str) -> None:
    jobs = json.load(open(spec_path))
    adapter = AudioAdapter.default()
    separators = {}
    for job in jobs:
        begin = time.perf_counter()
        if job["params"] not in separators:
            separators[job["params"]] = Separator(job["params"], MWF=False, multiprocess=False)
        separator = separators[job["params"]]
        waveform, _ = adapter.load(job["input"], sample_rate=separator._sample_rate)
        stems = separator.separate(waveform)
        np.savez(job["output"], waveform=waveform, **{k: np.asarray(v, np.float32) for k, v in stems.items()})
        print(f"{job['params']} {job['input']}: {time.perf_counter() - begin:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
