"""--precision bf16: when it is refused, how it names its output, and how far its stems are from fp32's."""

import math

import numpy as np
import pytest

from models.chunking import segments
from models.precision import BF16_REFUSAL, bf16_refusal, model_id
from models.provider import load_separator
from tests.music import synthesize_stems
from transforms.catalogue.layout import model_folder

# bf16 stems against fp32's on music, on a CPU with AVX512_BF16 (measured 42-55 dB on these chunks).
MIN_BF16_SNR_DB = 35.0
SHA = "7c923821145ae0c9fee6c2c9dbe9594fbe54fa32ec96d82d607b11c24f33cf5f"


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}, {"avx2", "avx512f", "avx512_bf16"}])
def test_bf16_is_allowed_on_a_cpu_with_native_bf16(flags):
    assert bf16_refusal(frozenset(flags), on_gpu=False) is None


@pytest.mark.parametrize("flags", [set(), {"avx2", "fma"}, {"avx512f", "avx512_vnni", "amx_tile"}])
def test_bf16_is_refused_on_a_cpu_without_it_but_not_on_a_gpu(flags):
    assert bf16_refusal(frozenset(flags), on_gpu=False) == BF16_REFUSAL == (
        "--precision bf16 needs a CPU with AMX or AVX512_BF16 (this one has neither: it would be slower, not faster)")
    assert bf16_refusal(frozenset(flags), on_gpu=True) is None


def test_fp32_keeps_its_names_and_bf16_has_its_own():
    assert model_folder("spleeter:2stems", SHA) == model_folder("spleeter:2stems", SHA, "fp32") == "2stems-7c923821145a"
    assert model_folder("spleeter:2stems", SHA, "bf16") == "2stems-7c923821145a-bf16"
    assert model_id("spleeter:2stems", SHA) == model_id("spleeter:2stems", SHA, "fp32") == f"spleeter:2stems@sha256:{SHA}"
    assert model_id("spleeter:2stems", SHA, "bf16") == f"spleeter:2stems@sha256:{SHA}+bf16"


@pytest.fixture(scope="module")
def separators(checkpoint_2stems):
    return {p: load_separator("spleeter:2stems", str(checkpoint_2stems), p) for p in ("fp32", "bf16")}


@pytest.fixture(scope="module")
def chunks(separators) -> np.ndarray:
    """The chunks of 6 s of the tests' music (speech over harmony, bass and drums), and the first at half level."""
    stems = synthesize_stems(6.0, seed=0)
    mix = stems["vocals"] + stems["accompaniment"]
    music = np.stack([s.samples for s in segments([mix], separators["fp32"].geometry)])
    return np.concatenate([music, 0.5 * music[:1]]).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((estimate.astype(np.float64) - reference) ** 2)
    return math.inf if error == 0 else 10 * math.log10(np.sum(reference.astype(np.float64) ** 2) / error)


def test_bf16_stems_differ_from_fp32s_within_the_bound(separators, chunks):
    fp32, bf16 = (separators[p].separate_chunks(chunks) for p in ("fp32", "bf16"))
    assert separators["bf16"].model_id == separators["fp32"].model_id + "+bf16"
    assert not np.array_equal(fp32, bf16)  # the network really ran in bf16
    for i in range(len(chunks)):
        for k, name in enumerate(separators["fp32"].instruments):
            assert snr_db(fp32[k, i], bf16[k, i]) > MIN_BF16_SNR_DB, (i, name)


def test_a_bf16_chunks_stems_do_not_depend_on_its_batch(separators, chunks):
    """The CPU runs whole batches (Separator._batched): in bf16 too a chunk must come out as it does alone."""
    bf16 = separators["bf16"]
    alone = [bf16.separate_chunks(chunk[None])[:, 0] for chunk in chunks]
    for order in (list(range(len(chunks))), list(range(len(chunks)))[::-1]):
        batched = bf16.separate_chunks(chunks[order])
        for position, i in enumerate(order):
            assert np.array_equal(batched[:, position], alone[i]), (i, position)
