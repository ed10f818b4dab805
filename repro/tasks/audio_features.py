"""The AST front end with torchaudio: resample, Kaldi fbank, cut/pad, SpecAugment, normalise.

As in the AST recipe (YuanGongND/ast src/dataloader.py, _wav2fbank and __getitem__): remove the
DC offset, Kaldi-compatible log-mel filterbank (htk_compat, Hann window, no energy, no dither),
zero-pad or cut to target_length frames, frequency and time masking on training examples only,
then (x - mean) / (2 * std) with the dataset's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from repro import seeding


@dataclass(frozen=True, kw_only=True)
class FbankSettings:
    """[features]: the AST front end (sample rate, mel bins, window, frames, SpecAugment, normalisation)."""

    sample_rate: int
    num_mel_bins: int
    frame_length_ms: float
    frame_shift_ms: float
    window: str
    dither: float
    target_length: int
    mean: float
    std: float
    freq_mask: int
    time_mask: int



def fbank(waveform, sample_rate: int, cfg: FbankSettings):
    """[time, mel] log-mel features of a [1, samples] waveform."""
    import torch
    import torchaudio

    waveform = waveform - waveform.mean()
    target_sr = cfg.sample_rate
    if sample_rate != target_sr:
        waveform = torchaudio.functional.resample(waveform, sample_rate, target_sr)
    feats = torchaudio.compliance.kaldi.fbank(
        waveform, htk_compat=True, sample_frequency=target_sr, use_energy=False, window_type=cfg.window,
        num_mel_bins=cfg.num_mel_bins, dither=cfg.dither, frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
    )
    target = cfg.target_length
    frames = feats.shape[0]
    if frames < target:
        feats = torch.nn.functional.pad(feats, (0, 0, 0, target - frames))
    elif frames > target:
        feats = feats[:target]
    return feats


def spec_augment(feats, cfg: FbankSettings, seed: int):
    """Frequency and time masking (torchaudio) with their own seeded RNG: the same example in the
    same epoch gets the same masks, whichever worker process draws it."""
    import torchaudio

    with seeding.isolated(seed):
        x = feats.t().unsqueeze(0)  # [1, mel, time], the layout torchaudio's masks expect
        if cfg.freq_mask:
            x = torchaudio.transforms.FrequencyMasking(cfg.freq_mask)(x)
        if cfg.time_mask:
            x = torchaudio.transforms.TimeMasking(cfg.time_mask)(x)
        return x.squeeze(0).t()


def normalise(feats, cfg: FbankSettings):
    return (feats - cfg.mean) / (cfg.std * 2)
