import http.server
import re
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from hf_ltbm.audio import AudioInputError, find_audio_files, load_audio

from .conftest import write_clip


@pytest.mark.parametrize("ending", [".wav", ".flac", ".ogg", ".mp3"])
def test_files_of_each_format_decode_to_mono_float32_at_the_target_rate(tmp_path, ending):
    path = tmp_path / f"clip{ending}"
    write_clip(path, seconds=1.0, rate=22050, channels=2)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1200  # mp3 adds encoder delay/padding
    assert np.abs(wave).max() > 0.1


def test_resampling_keeps_the_tone_frequency(tmp_path):
    path = tmp_path / "a.wav"
    write_clip(path, seconds=1.0, rate=44100, freq=1000.0)
    wave = load_audio(path, 16000)
    assert len(wave) == 16000
    peak = np.argmax(np.abs(np.fft.rfft(wave)))  # 1 Hz bins for one second of audio
    assert abs(peak - 1000) <= 1


def test_stereo_is_averaged(tmp_path):
    path = tmp_path / "s.wav"
    data = write_clip(path, channels=2)
    np.testing.assert_allclose(load_audio(path, 16000), data.mean(axis=1), atol=1e-4)


def test_arrays_tensors_and_dicts():
    wave = np.linspace(-0.5, 0.5, 1600, dtype=np.float64)
    np.testing.assert_array_equal(load_audio(wave, 16000), wave.astype(np.float32))
    np.testing.assert_array_equal(load_audio(torch.from_numpy(wave), 16000), wave.astype(np.float32))
    np.testing.assert_array_equal(load_audio(np.stack([wave, wave]), 16000), wave.astype(np.float32))
    resampled = load_audio({"array": wave, "sampling_rate": 8000}, 16000)
    assert len(resampled) == 3200
    given = {"array": wave, "sampling_rate": 16000}
    load_audio(given, 16000)
    assert set(given) == {"array", "sampling_rate"}  # not mutated


@pytest.mark.parametrize(
    "source, message",
    [
        (np.zeros(0), "is empty"),
        (np.array([0.0, np.nan]), "NaN or infinite"),
        (np.zeros((2, 2, 2)), "expected [samples]"),
        ({"array": [0.1]}, "'array' (or 'raw') and 'sampling_rate'"),
        (object(), "Cannot use object as audio"),
    ],
)
def test_bad_arrays_are_named(source, message):
    with pytest.raises(AudioInputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_audio(source, 16000)


def test_file_errors(tmp_path):
    with pytest.raises(AudioInputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 16000)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all")
    with pytest.raises(AudioInputError, match="Could not decode audio file .*bad.wav"):
        load_audio(bad, 16000)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="is empty"):
        load_audio(empty, 16000)
    with pytest.raises(AudioInputError, match="is a folder"):
        load_audio(tmp_path, 16000)
    with pytest.raises(ValueError, match=r"`sampling_rate` must be a positive integer \(Hz\), got 0\."):
        load_audio(np.ones(3), 0)


def test_find_audio_files_expands_folders_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.wav", "a.flac", "sub/c.mp3", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    explicit = tmp_path / "notes.txt"
    found = find_audio_files([tmp_path, explicit])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.flac", "b.wav", "sub/c.mp3", "notes.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioInputError, match="holds no audio files"):
        find_audio_files([tmp_path / "empty"])
    with pytest.raises(AudioInputError, match="does not exist"):
        find_audio_files([tmp_path / "nope.wav"])


def test_urls_are_downloaded(tmp_path):
    write_clip(tmp_path / "clip.flac", seconds=0.5)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert len(load_audio(f"{url}/clip.flac", 16000)) == 8000
        with pytest.raises(AudioInputError, match="Could not download audio"):
            load_audio(f"{url}/missing.flac", 16000)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "dtype, file_name, subtype",
    [
        (np.int16, "a.wav", "PCM_16"),
        (np.int32, "a.wav", "PCM_32"),
        (np.int8, "a.aiff", "PCM_S8"),
        (np.uint8, "a.wav", "PCM_U8"),
    ],
)
@pytest.mark.parametrize("wrap", ["array", "tensor", "dict"])
def test_integer_pcm_arrays_give_the_samples_of_their_file(tmp_path, dtype, file_name, subtype, wrap):
    """Integer PCM (what scipy.io.wavfile and soundfile's dtype="int16" return) is scaled to [-1, 1] exactly as
    the same samples read from a file are; before, int16 samples reached the model 32768 times too loud."""
    import soundfile as sf
    import torch

    from hf_ltbm import load_audio

    info = np.iinfo(dtype)
    pcm = np.random.default_rng(0).integers(info.min, info.max, size=4000, endpoint=True).astype(dtype)
    half = 2.0 ** (8 * pcm.itemsize - 1)
    exact = (pcm.astype(np.float64) - (half if dtype == np.uint8 else 0)) / half  # representable in each subtype
    sf.write(str(tmp_path / file_name), exact, 16000, subtype=subtype)
    from_file = load_audio(tmp_path / file_name, 16000)
    source = {"array": pcm, "tensor": torch.from_numpy(pcm), "dict": {"array": pcm, "sampling_rate": 16000}}[wrap]
    from_array = load_audio(source, 16000)
    assert from_array.dtype == np.float32 and np.abs(from_array).max() <= 1.0
    np.testing.assert_array_equal(from_array, from_file)


def test_non_numeric_audio_is_refused_by_dtype():
    from hf_ltbm import AudioInputError, load_audio

    with pytest.raises(AudioInputError, match="dtype bool"):
        load_audio(np.zeros(100, dtype=bool), 16000)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("wrap", ["array", "tensor", "dict"])
def test_stereo_arrays_in_either_layout_give_the_samples_of_their_file(tmp_path, layout, wrap):
    """soundfile and scipy return `[samples, channels]`; that layout was averaged over the samples axis before."""
    import torch

    path = tmp_path / "stereo.wav"
    data = write_clip(path, channels=2)  # [samples, channels]
    from_file = load_audio(path, 16000)
    array = data if layout == "channels_last" else data.T.copy()
    source = {"array": array, "tensor": torch.from_numpy(array), "dict": {"array": array, "sampling_rate": 16000}}[
        wrap
    ]
    np.testing.assert_allclose(load_audio(source, 16000), from_file, atol=1e-4)  # the file holds 16-bit samples


@pytest.mark.parametrize("shape", [(2, 2), (16, 16), (100, 12)])
def test_an_ambiguous_two_dimensional_array_is_refused_by_shape(shape):
    with pytest.raises(AudioInputError, match=re.escape(f"shape {shape}: cannot tell channels from samples")):
        load_audio(np.zeros(shape, dtype=np.float32), 16000)


# --------------------------------------------------------------------------------------------- property-based tests
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Every sample type the ecosystem hands over, with a file subtype that stores its values exactly.
_FILE_FOR_DTYPE = {
    "int8": ("a.aiff", "PCM_S8"),
    "uint8": ("a.wav", "PCM_U8"),
    "int16": ("a.wav", "PCM_16"),
    "int32": ("a.wav", "PCM_32"),
    "float32": ("a.wav", "FLOAT"),
    "float64": ("a.wav", "DOUBLE"),
}


def _samples(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return rng.uniform(-1, 1, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _as_file_values(pcm: np.ndarray) -> np.ndarray:
    """The values soundfile reads back for `pcm` (integer PCM scaled to [-1, 1]; floats as they are)."""
    if pcm.dtype.kind == "f":
        return pcm.astype(np.float64)
    half = 2.0 ** (8 * pcm.itemsize - 1)
    return (pcm.astype(np.float64) - (half if pcm.dtype.kind == "u" else 0)) / half


@given(
    dtype=st.sampled_from(sorted(_FILE_FOR_DTYPE)),
    channels=st.integers(1, 8),
    length=st.integers(9, 600),
    layout=st.sampled_from(["mono", "channels_first", "channels_last"]),
    wrap=st.sampled_from(["array", "tensor", "list", "dict"]),
    seed=st.integers(0, 2**16),
)
def test_any_dtype_and_layout_gives_the_samples_and_features_of_its_file(
    tmp_path_factory, dtype, channels, length, layout, wrap, seed
):
    """Arrays, tensors, lists and `{"array", "sampling_rate"}` dicts of every PCM and float type, mono or in either
    channel layout, give exactly the samples (and so the features) that the same samples give from a file; a list of
    integers (int64, no audio format) is refused by dtype."""
    channels = 1 if layout == "mono" else channels
    data = _samples(dtype, (length, channels), seed)  # [samples, channels], as soundfile returns it
    name, subtype = _FILE_FOR_DTYPE[dtype]
    path = tmp_path_factory.mktemp("audio") / name
    sf.write(str(path), _as_file_values(data), 16000, subtype=subtype)
    from_file = load_audio(path, 16000)
    array = {"mono": data[:, 0], "channels_last": data, "channels_first": np.ascontiguousarray(data.T)}[layout]
    source = {
        "array": array,
        "tensor": torch.from_numpy(array),
        "list": array.tolist(),
        "dict": {"array": array, "sampling_rate": 16000},
    }[wrap]
    if wrap == "list" and data.dtype.kind != "f":
        with pytest.raises(AudioInputError, match="dtype int64.*build a numpy array of the PCM dtype"):
            load_audio(source, 16000)
        return
    from_array = load_audio(source, 16000)
    assert from_array.dtype == np.float32 and from_array.shape == (length,)
    np.testing.assert_array_equal(from_array, from_file)
    if seed % 8 == 0:  # the features follow from the samples; checked on a share of the examples
        from transformers import WhisperFeatureExtractor

        extract = WhisperFeatureExtractor(feature_size=80)
        np.testing.assert_array_equal(
            extract(from_array, sampling_rate=16000)["input_features"],
            extract(from_file, sampling_rate=16000)["input_features"],
        )


@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 8), st.integers(1, 8)),  # both axes could hold channels
        st.tuples(st.integers(9, 64), st.integers(9, 64)),  # neither axis could
        st.lists(st.integers(1, 4), min_size=3, max_size=4).map(tuple),  # not a waveform at all
    ),
    wrap=st.sampled_from(["array", "tensor", "dict"]),
)
def test_a_layout_that_cannot_be_told_apart_is_refused_by_shape(shape, wrap):
    array = np.zeros(shape, dtype=np.float32)
    source = {"array": array, "tensor": torch.from_numpy(array), "dict": {"array": array, "sampling_rate": 16000}}[
        wrap
    ]
    with pytest.raises(AudioInputError, match=re.escape(f"shape {shape}")):
        load_audio(source, 16000)


@pytest.mark.parametrize("dtype", ["int64", "uint64", "bool", "complex64", "complex128", "str"])
def test_a_dtype_that_is_no_audio_sample_type_is_refused_by_name(dtype):
    array = np.zeros(100, dtype=dtype)
    with pytest.raises(AudioInputError, match=re.escape(f"Audio array has dtype {array.dtype}; pass real samples")):
        load_audio(array, 16000)
    with pytest.raises(AudioInputError, match="Cannot use ndarray as audio"):
        load_audio(np.array([None] * 100), 16000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16000", True, None])
@pytest.mark.parametrize("where", ["target", "dict"])
def test_a_sampling_rate_that_is_not_a_positive_integer_is_refused_by_name(rate, where):
    wave = np.zeros(100, dtype=np.float32)
    error = ValueError if isinstance(rate, (int, float)) and not isinstance(rate, bool) else TypeError
    with pytest.raises(error, match=re.escape(f"`sampling_rate` must be a positive integer (Hz), got {rate!r}")):
        if where == "target":
            load_audio(wave, rate)
        else:
            load_audio({"array": wave, "sampling_rate": rate}, 16000)


def test_integral_rates_of_any_numeric_type_are_accepted():
    wave = np.zeros(100, dtype=np.float32)
    assert len(load_audio({"array": wave, "sampling_rate": np.int64(8000)}, 16000.0)) == 200


def test_check_audio_counts_samples_without_decoding_and_raises_what_load_audio_raises(tmp_path):
    from hf_ltbm.audio import check_audio

    write_clip(tmp_path / "a.flac", seconds=1.5, rate=8000)
    assert check_audio(tmp_path / "a.flac", 16000) == 24000
    assert check_audio({"array": np.zeros(800), "sampling_rate": 8000}, 16000) == 1600
    assert check_audio(np.zeros((2, 500)), 16000) == 500
    assert check_audio("https://example.com/a.wav", 16000) is None  # not fetched
    (tmp_path / "garbage.wav").write_text("not audio")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    for bad in (
        tmp_path / "missing.wav",
        tmp_path / "garbage.wav",
        tmp_path / "empty.wav",
        tmp_path,
        np.zeros(0),
        np.array([np.nan]),
        np.zeros((3, 3)),
        {"array": np.zeros(4)},
        {"array": np.zeros(4), "sampling_rate": -1},
    ):
        with pytest.raises(ValueError) as from_load:
            load_audio(bad, 16000)
        with pytest.raises(type(from_load.value), match=re.escape(str(from_load.value))):
            check_audio(bad, 16000)
