"""ESC-50 (karolpiczak/ESC-50): audio/{fold}-{src_file}-{take}-{target}.wav + meta/esc50.csv.

2,000 five-second clips, 44.1 kHz mono 16-bit PCM, 50 classes x 40, five official folds. Clips cut
from the same Freesound source file share a fold; a split check enforces it, since a source file in
two folds leaks between training and evaluation.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.data.checks import DataError, Problem, SplitBuild

META = "meta/esc50.csv"
MARKER = META
AUDIO_DIR = "audio"
COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
FOLDS = (1, 2, 3, 4, 5)
SAMPLE_RATE = 44100
_NAME = re.compile(r"^(?P<fold>\d+)-(?P<src>[0-9A-Za-z]+)-(?P<take>[A-Z])-(?P<target>\d+)\.wav$")

# The 50 categories in target order, as in meta/esc50.csv (target -> category).
CATEGORIES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
]
ESC10 = {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick",
         "helicopter", "chainsaw"}

SPLIT_INFO = {
    "rule": "the five official folds of ESC-50 (column 'fold' of meta/esc50.csv, also the first field of each file name)",
    "id_format": "<file name without .wav>, i.e. {fold}-{src_file}-{take}-{target}",
    "group_key": "src_file",
    "group_rule": "all clips cut from one Freesound source file (src_file) are in one fold",
    "label_source": "target -> category in meta/esc50.csv",
}


@dataclass(frozen=True)
class Clip:
    id: str
    filename: str
    fold: int
    target: int
    category: str
    esc10: bool
    src_file: str
    take: str


def read_meta(root: Path) -> list[Clip]:
    """Parse meta/esc50.csv strictly; DataError names the row and the field for anything off."""
    path = Path(root) / META
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(META, "metadata file missing", kind="missing") from None
    except UnicodeDecodeError:
        raise DataError(META, "not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DataError(META, "empty file", 1)
    header = rows[0]
    if header != COLUMNS:
        for i, expected in enumerate(COLUMNS):
            got = header[i] if i < len(header) else None
            if got != expected:
                raise DataError(META, f"header column {i + 1} is {got!r}, expected {expected!r} "
                                f"(columns must be {','.join(COLUMNS)})", 1)
        raise DataError(META, f"header has {len(header)} columns, expected {len(COLUMNS)}", 1)
    clips: list[Clip] = []
    category_of: dict[int, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(COLUMNS):
            raise DataError(META, f"row has {len(row)} fields, expected {len(COLUMNS)}", number)
        filename, fold, target, category, esc10, src_file, take = row
        match = _NAME.match(filename)
        if not match:
            raise DataError(META, f"filename {filename!r} is not {{fold}}-{{src_file}}-{{take}}-{{target}}.wav", number)
        try:
            fold_i, target_i = int(fold), int(target)
        except ValueError:
            raise DataError(META, f"fold {fold!r} or target {target!r} is not an integer", number) from None
        checks = [
            ("fold", fold_i, int(match["fold"])),
            ("target", target_i, int(match["target"])),
            ("src_file", src_file, match["src"]),
            ("take", take, match["take"]),
        ]
        for field, value, from_name in checks:
            if value != from_name:
                raise DataError(META, f"field {field} is {value!r} but the file name says {from_name!r}", number)
        if esc10 not in ("True", "False"):
            raise DataError(META, f"field esc10 is {esc10!r}, expected True or False", number)
        if not category:
            raise DataError(META, "field category is empty", number)
        if category_of.setdefault(target_i, category) != category:
            raise DataError(META, f"target {target_i} is {category!r} here but {category_of[target_i]!r} earlier", number,
                            kind="label")
        clips.append(Clip(filename[:-4], filename, fold_i, target_i, category, esc10 == "True", src_file, take))
    return clips


def label_map(clips: list[Clip]) -> list[str]:
    by_target = {c.target: c.category for c in clips}
    labels = [by_target.get(i) for i in range(max(by_target) + 1)] if by_target else []
    missing = [i for i, name in enumerate(labels) if name is None]
    if missing:
        raise DataError(META, f"targets must be 0..{len(labels) - 1} without gaps; missing {missing[:5]}", kind="label")
    return labels  # type: ignore[return-value]


def build_splits(root: Path) -> SplitBuild:
    root = Path(root)
    try:
        clips = read_meta(root)
        labels = label_map(clips)
    except DataError as exc:
        return SplitBuild(splits={}, labels=None, problems=[exc.problem()])
    build = SplitBuild(splits={}, labels=labels)
    audio = {p.name for p in (root / AUDIO_DIR).glob("*.wav")} if (root / AUDIO_DIR).is_dir() else set()
    listed = set()
    for clip in clips:
        listed.add(clip.filename)
        if clip.filename not in audio:
            build.problems.append(Problem("missing", f"{AUDIO_DIR}/{clip.filename}", "listed in meta/esc50.csv but not on disk"))
        if clip.fold not in FOLDS:
            build.problems.append(Problem("parse", META, f"{clip.filename}: fold {clip.fold} is not one of 1-5"))
        build.splits.setdefault(f"fold{clip.fold}", []).append(clip.id)
        build.groups.setdefault(f"fold{clip.fold}", set()).add(clip.src_file)
    for name in sorted(audio - listed):
        build.problems.append(Problem("extra", f"{AUDIO_DIR}/{name}", "audio file not listed in meta/esc50.csv"))
    return build


def load_clip(root: Path, clip: Clip):
    """The clip as a float32 tensor [1, samples] in [-1, 1], and its sample rate (soundfile)."""
    import soundfile as sf
    import torch

    path = Path(root) / AUDIO_DIR / clip.filename
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DataError(f"{AUDIO_DIR}/{clip.filename}", f"not a readable WAV file ({exc})") from None
    if data.shape[1] != 1:
        raise DataError(f"{AUDIO_DIR}/{clip.filename}", f"{data.shape[1]} channels, ESC-50 clips are mono")
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


# ----------------------------------------------------------------- synthetic copy (smoke profile)

SYNTHETIC_CLASSES = 5  # the first five categories: dog, rooster, pig, cow, frog
SYNTHETIC_SOURCES = 2  # source files per class and fold, two takes (A, B) each (the group constraint is exercised)
SYNTHETIC_TAKES = 2
# Annotation noise, as any labelled set has: in each fold one source file of one class sounds like
# the next class. A model that learned the sounds gets its 2 takes wrong on every seed, so the smoke
# accuracy tops out at 0.9 (18 of 20 per fold), not at a ceiling of 1.0 where a harmful switch
# has nowhere to show, and the same clips are wrong whatever the seed.
SYNTHETIC_SECONDS = 5
NOISE = 300  # peak of the uniform background noise, against tones of about 6,000: at 1,500 the white
             # noise filled the upper mel bins and a tiny AST from scratch learned the tones on some seeds only


def _synthetic_wave(rng: np.random.Generator, target: int, n: int) -> np.ndarray:
    """Integer-only synthesis (triangle tones, noise, bursts), so the bytes are the same on every
    machine: no libm call whose last bit could differ between CPUs."""
    period = (40, 64, 100, 150, 220)[target % 5] + 7 * (target // 5)
    t = np.arange(n, dtype=np.int64)
    phase = (t + int(rng.integers(period))) % period
    tri = np.abs(2 * phase - period) * 2 - period  # triangle in [-period, period]
    tone = tri * (6000 // period)
    burst_len = 2205 * (1 + target % 3)
    gate = ((t // burst_len) % 2 == 0).astype(np.int64)
    noise = rng.integers(-NOISE, NOISE + 1, size=n, dtype=np.int64)
    wave = tone * gate + noise
    return np.clip(wave, -32768, 32767).astype(np.int16)


def generate(root: Path, seed: int = 0, full: bool = False) -> None:
    """Write a synthetic ESC-50 in the real layout: 44.1 kHz mono PCM_16 WAVs and meta/esc50.csv;
    `full`: the real size, 2,000 five-second clips of 50 classes, 8 per class and fold, two takes
    of each source file (`repro rehearse`)."""
    import soundfile as sf

    from repro.atomic import atomic_open, write_text

    root = Path(root)
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = []
    n = SAMPLE_RATE * SYNTHETIC_SECONDS
    used_src: set[int] = set()
    classes, sources, takes = (len(CATEGORIES), 4, 2) if full else (SYNTHETIC_CLASSES, SYNTHETIC_SOURCES, SYNTHETIC_TAKES)
    for fold in FOLDS:
        noisy = None if full else (fold - 1) % classes  # the class whose first source sounds like the next class
        for i, target in enumerate(t for t in range(classes) for _ in range(sources)):  # `sources` source files per class
            sound = (target + 1) % classes if target == noisy and i % sources == 0 else target
            src = int(rng.integers(10000, 300000))
            while src in used_src:
                src = int(rng.integers(10000, 300000))
            used_src.add(src)
            for k in range(takes):
                take = "ABCDEFGH"[k]
                filename = f"{fold}-{src}-{take}-{target}.wav"
                wave = _synthetic_wave(rng, sound, n)
                with atomic_open(root / AUDIO_DIR / filename, "wb") as handle:
                    sf.write(handle, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
                category = CATEGORIES[target]
                rows.append([filename, str(fold), str(target), category, str(category in ESC10), str(src), take])
    rows.sort(key=lambda r: r[0])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    write_text(root / META, buf.getvalue())
