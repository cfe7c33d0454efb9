"""Reading audio for the pipeline and the command line: files (wav, flac, mp3, ogg, ... through libsndfile) or arrays,
down-mixed to mono float32 and resampled (soxr) to the rate the processor expects.

Every problem with an input is an `AudioInputError` that names the input and says what to do.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

__all__ = ["AUDIO_EXTENSIONS", "AudioInputError", "AudioSource", "check_audio", "find_audio_files", "load_audio"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".au")
"""File name endings `find_audio_files` picks up in folders."""

AudioSource = Union[str, os.PathLike, np.ndarray, Any, dict]
"""A path or URL, a `[samples]` / `[channels, samples]` array or tensor at the target rate, or a `datasets` dict."""


class AudioInputError(ValueError):
    """An audio input that cannot be used: missing, unreadable, empty, or of the wrong shape."""


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    import soxr

    return soxr.resample(wave, rate, target, quality="HQ").astype(np.float32, copy=False)


#: The most channels an array's short axis may have for it to be read as the channel axis.
MAX_CHANNELS = 8


def _to_mono(wave: np.ndarray, name: str, channels_last: Optional[bool]) -> np.ndarray:
    """`[samples]` from `[samples]`, `[channels, samples]` or `[samples, channels]` (the layout soundfile and scipy
    return); `channels_last=None` tells the layouts apart by the short axis (at most `MAX_CHANNELS` channels)."""
    if wave.ndim == 2:
        if channels_last is None:
            rows, columns = wave.shape
            if rows <= MAX_CHANNELS < columns:
                channels_last = False
            elif columns <= MAX_CHANNELS < rows:
                channels_last = True
            else:
                raise AudioInputError(
                    f"Audio {name} has shape {tuple(wave.shape)}: cannot tell channels from samples. Pass "
                    f"[samples], [channels, samples] or [samples, channels] with at most {MAX_CHANNELS} channels."
                )
        wave = wave.mean(axis=1 if channels_last else 0)
    if wave.ndim != 1:
        raise AudioInputError(
            f"Audio {name} has shape {tuple(wave.shape)}; expected [samples], [channels, samples] or "
            "[samples, channels]."
        )
    return wave


def _read_file(path: Path, decode: bool = True) -> tuple[Optional[np.ndarray], int]:
    if not path.exists():
        raise AudioInputError(f"Audio file {str(path)!r} does not exist.")
    if path.is_dir():
        raise AudioInputError(f"Audio path {str(path)!r} is a folder; pass the files in it (the CLI expands folders).")
    return _decode(str(path), f"file {str(path)!r}", decode)


def _decode(data: Any, name: str, decode: bool = True) -> tuple[Optional[np.ndarray], int]:
    """Decodes an encoded file (a path or a file object); `decode=False` only reads its header (samples `None`)."""
    import soundfile as sf

    try:
        if not decode:
            info = sf.info(data)
            return int(info.frames), int(info.samplerate)
        wave, rate = sf.read(data, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioInputError(
            f"Could not decode audio {name} ({err}). Supported: "
            f"{', '.join(sorted(f.lower() for f in sf.available_formats()))}; convert other formats to wav or flac."
        ) from err
    return _to_mono(wave, name, channels_last=True), int(rate)


def _read_url(url: str, timeout: float = 60.0) -> tuple[np.ndarray, int]:
    import io
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise AudioInputError(f"Could not download audio {url!r} ({err}); download it and pass the file.") from err
    return _decode(io.BytesIO(data), repr(url))


def _check_rate(name: str, value: Any) -> int:
    """`value` as a positive integer sampling rate, or an error naming `name` and the value."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real)):
        raise TypeError(f"`{name}` must be a positive integer (Hz), got {value!r} of type {type(value).__name__}.")
    if not (value > 0 and float(value).is_integer()):
        raise ValueError(f"`{name}` must be a positive integer (Hz), got {value!r}.")
    return int(value)


def _read(source: AudioSource, name: Optional[str], decode: bool = True) -> tuple[Any, int, str]:
    """`(mono float32 samples, their rate (0: the caller's), the input's name)`; with `decode=False`, files are only
    checked (exist, header readable) and their frame count stands for the samples (URLs: `None`, not fetched)."""
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        if not decode:
            return None, 0, name or repr(source)
        return (*_read_url(source), name or repr(source))
    if isinstance(source, (str, os.PathLike)):
        return (*_read_file(Path(source), decode), name or repr(str(source)))
    if isinstance(source, dict) and source.get("bytes") is not None:  # `datasets` Audio(decode=False)
        import io

        name = name or repr(source.get("path") or "bytes")
        return (*_decode(io.BytesIO(source["bytes"]), name, decode), name)
    if isinstance(source, dict) and "array" not in source and "raw" not in source and source.get("path"):
        return (*_read_file(Path(source["path"]), decode), name or repr(str(source["path"])))
    if isinstance(source, dict):
        key = "array" if "array" in source else "raw" if "raw" in source else None
        if key is None or "sampling_rate" not in source:
            raise AudioInputError(
                "An audio dict needs 'array' (or 'raw') and 'sampling_rate' keys, or 'bytes' / 'path' (the "
                f"`datasets` Audio(decode=False) form), got keys {sorted(source)}."
            )
        name = name or "dict"
        rate = _check_rate("sampling_rate", source["sampling_rate"])
        return _to_mono(_to_float(source[key], name), name, channels_last=None), rate, name
    name = name or "array"
    return _to_mono(_to_float(source, name), name, channels_last=None), 0, name


def _check_samples(wave: np.ndarray, name: str) -> None:
    if wave.size == 0:
        raise AudioInputError(f"Audio {name} is empty (0 samples).")
    if not np.isfinite(wave).all():
        raise AudioInputError(f"Audio {name} contains NaN or infinite samples.")


def check_audio(source: AudioSource, sampling_rate: int, *, name: Optional[str] = None) -> Optional[int]:
    """Raises the `AudioInputError` that :func:`load_audio` would raise for `source`, without decoding files (they
    must exist and have a readable header) or fetching URLs: what the pipeline checks for every input before any
    model weights run.

    Returns:
        The number of samples `source` has at `sampling_rate` (`None` for a URL).
    """
    sampling_rate = _check_rate("sampling_rate", sampling_rate)
    wave, rate, name = _read(source, name, decode=False)
    if wave is None:
        return None
    if isinstance(wave, int):  # an encoded file's frame count
        if wave == 0:
            raise AudioInputError(f"Audio {name} is empty (0 samples).")
        return round(wave * sampling_rate / rate)
    _check_samples(wave, name)
    return round(wave.shape[0] * sampling_rate / (rate or sampling_rate))


def load_audio(source: AudioSource, sampling_rate: int, *, name: Optional[str] = None) -> np.ndarray:
    """Returns `source` as a mono float32 waveform `[samples]` at `sampling_rate`.

    Args:
        source: a path or http(s) URL of an audio file; a numpy array or torch tensor (`[samples]`,
            `[channels, samples]` or `[samples, channels]`, float in [-1, 1] or integer PCM) already at
            `sampling_rate`; a dict `{"array" (or "raw"): waveform,
            "sampling_rate": rate}` (the decoded `datasets` Audio format), resampled when its rate differs; or a
            dict `{"bytes": encoded file, "path": name}` / `{"path": file}` (the `Audio(decode=False)` format).
        sampling_rate: the target rate (the feature extractor's, 16 kHz for Qwen2-Audio and AF3).
        name: how errors refer to the input (defaults to the path, or "array").

    Raises:
        AudioInputError: missing or undecodable file, empty audio, non-finite samples, bad shape or dtype.
        TypeError, ValueError: a sampling rate that is not a positive integer.
    """
    sampling_rate = _check_rate("sampling_rate", sampling_rate)
    wave, rate, name = _read(source, name)
    _check_samples(wave, name)
    return _resample(wave, rate or sampling_rate, sampling_rate)


def _as_numpy(value: Any) -> Any:
    """A torch tensor as a numpy array of the same dtype kind (integer PCM stays integer; bf16/fp16 become float32)."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()
        return value.numpy()
    return value


def _to_float(value: Any, name: str) -> np.ndarray:
    """Samples as float32 in [-1, 1]: integer PCM is scaled the way soundfile reads files (signed `intN` by
    `2**(N-1)`, unsigned `uintN` centred on `2**(N-1)` first), so an array gives the features its file would."""
    try:
        array = np.asarray(_as_numpy(value))
        if array.dtype == object:
            raise TypeError(array.dtype)
    except (TypeError, ValueError) as err:
        raise AudioInputError(
            f"Cannot use {type(value).__name__} as audio: pass a file path, a waveform array or "
            "{'array': ..., 'sampling_rate': ...}."
        ) from err
    pcm = np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 4  # no audio format has 64-bit PCM
    if not (pcm or np.issubdtype(array.dtype, np.floating)):
        raise AudioInputError(
            f"Audio {name} has dtype {array.dtype}; pass real samples: float (in [-1, 1]) or integer PCM (int8, "
            "int16, int32, uint8)"
            + (
                ". A list of Python ints becomes int64: build a numpy array of the PCM dtype instead."
                if np.issubdtype(array.dtype, np.integer)
                else "."
            )
        )
    if np.issubdtype(array.dtype, np.signedinteger):
        return (array.astype(np.float64) / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)
    if np.issubdtype(array.dtype, np.unsignedinteger):
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    return array.astype(np.float32, copy=False)


def find_audio_files(paths: Sequence[Union[str, os.PathLike]], extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list:
    """Expands `paths` (files or folders, searched recursively for `extensions`) into a sorted list of files.

    Files given explicitly are kept whatever their ending; a missing path or a folder without audio raises
    `AudioInputError`.
    """
    endings = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in endings)
            if not inside:
                raise AudioInputError(f"Folder {str(path)!r} holds no audio files ({', '.join(endings)}).")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise AudioInputError(f"Audio file {str(path)!r} does not exist.")
    return found
