"""Audio-visual offset ("DeSync"-style) for impacts: how far the generated sound's onsets sit from
the video's contact times, as one signed offset per clip.

MMAudio (Cheng et al. 2025, §4 "Metrics") reports DeSync, the offset between audio and video
predicted by Synchformer. We have no learned sync model for the demo, but we know the visual
events exactly (the contact times of flowav.data.demo.impacts), so we estimate the offset directly:
the lag that maximises the normalised cross-correlation (Pearson correlation over the overlap,
flowav.eval.lipsync.lag_correlation) between
- the audio's onset-strength envelope: the log-mel spectral flux of the latents, as in
  flowav.eval.onsets, placed on a time axis corrected for the flux's measured lead (onsets.py:
  the flux peaks 1.5 hops before the onset), and
- the video's contact train: a unit Gaussian bump at every contact time.
Lag L pairs contacts at t with audio at t + L, so a positive offset means the audio is late.

Undefined cases return NaN instead of raising: a clip with no contact inside the window (nothing to
align) has offset NaN and peak correlation NaN; flat audio (no onsets at all) has offset NaN and
peak correlation 0. `summarize` leaves clips without contacts out and counts flat audio as a miss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.ndimage

from flowav.eval.lipsync import lag_correlation
from flowav.eval.onsets import _FLUX_LEAD_HOPS, _parabolic_offset, spectral_flux

DEFAULT_SIGMA_S = 0.01  # about one latent frame (11.6 ms): a contact's bump in the video train


def _check_rate(name: str, rate: float, where: str) -> float:
  rate = float(rate)
  if not np.isfinite(rate) or rate <= 0:
    raise ValueError(f"{where}: {name}={rate} must be positive and finite")
  return rate


def onset_envelope(latents: np.ndarray, frame_rate: float, *, rate: float | None = None,
                   lead_frames: float = _FLUX_LEAD_HOPS) -> np.ndarray:
  """The audio side: onset strength of codec latents `[T, C]` (log-mel at `frame_rate` frames/s)
  resampled to `rate` (default `frame_rate`): `[K]` float64 with `K = round(T * rate / frame_rate)`,
  sample k at time `k / rate` seconds.

  Flux frame t is placed at `(t + lead_frames) / frame_rate`, where an onset that makes it peak
  actually happened (the 1024-sample window sees an onset ~1.5 hops before the frame's own hop;
  measured in onsets.py), then linearly interpolated. Going to a coarser rate first takes a
  centred running max over one output period, so no onset falls between output samples.
  """
  frame_rate = _check_rate("frame_rate", frame_rate, "onset_envelope")
  rate = frame_rate if rate is None else _check_rate("rate", rate, "onset_envelope")
  if np.ndim(latents) != 2:
    raise ValueError(f"onset_envelope: latents must be [T, C], got shape {np.shape(latents)}")
  flux = spectral_flux(latents)
  num_out = int(round(flux.size * rate / frame_rate))
  if flux.size == 0 or num_out == 0:
    return np.zeros((num_out,), np.float64)
  width = int(np.ceil(frame_rate / rate))
  if width > 1:
    flux = scipy.ndimage.maximum_filter1d(flux, size=width | 1, mode="nearest")
  times = (np.arange(flux.size) + lead_frames) / frame_rate
  return np.interp(np.arange(num_out) / rate, times, flux)


def contact_signal(contact_times_s: np.ndarray, num_frames: int, rate: float, *,
                   sigma_s: float = DEFAULT_SIGMA_S) -> np.ndarray:
  """The video side: `[num_frames]` float64 at `rate`, sample k at time `k / rate`, with a unit-peak
  Gaussian bump of std `sigma_s` centred at each contact time (exactly, not rounded to a sample).

  `sigma_s = 0` gives unit impulses at the nearest sample. Contacts outside `[0, num_frames / rate)`
  are ignored (they are outside the audio window). No contacts give all zeros.
  """
  times = np.asarray(contact_times_s, np.float64)
  if times.ndim != 1:
    raise ValueError(f"contact_signal: contact_times_s must be [K], got shape {times.shape}")
  if not np.all(np.isfinite(times)):
    raise ValueError("contact_signal: contact_times_s contain NaN or inf")
  if int(num_frames) != num_frames or num_frames < 0:
    raise ValueError(f"contact_signal: num_frames={num_frames} must be an integer >= 0")
  rate = _check_rate("rate", rate, "contact_signal")
  if not sigma_s >= 0:
    raise ValueError(f"contact_signal: sigma_s={sigma_s} must be >= 0")
  num_frames = int(num_frames)
  times = times[(times >= 0) & (times < num_frames / rate)]
  out = np.zeros((num_frames,), np.float64)
  if sigma_s == 0:
    np.add.at(out, np.minimum(np.round(times * rate).astype(np.int64), num_frames - 1), 1.0)
    return out
  t = np.arange(num_frames) / rate
  for c in times:
    out += np.exp(-0.5 * np.square((t - c) / sigma_s))
  return out


@dataclasses.dataclass(frozen=True)
class OffsetResult:
  """One clip's estimate: `offset_s` (positive = audio late; NaN when undefined, module doc), the
  correlation at the best integer lag `peak_corr`, the correlation at lag 0 `corr_at_zero`, and
  whether the video had any contact in the window (`has_events`)."""
  offset_s: float
  peak_corr: float
  corr_at_zero: float
  has_events: bool


def estimate_offset(envelope: np.ndarray, contacts_signal: np.ndarray, rate: float,
                    max_lag_s: float, *, refine: bool = True) -> OffsetResult:
  """Lag in `[-max_lag_s, max_lag_s]` (rounded down to whole samples at `rate`) maximising the
  Pearson correlation of `contacts_signal[t]` with `envelope[t + lag]` over their overlap.

  Args:
    envelope: `[K]` audio onset strength (`onset_envelope`).
    contacts_signal: `[K]` video event train (`contact_signal`), same rate and length.
    rate: samples per second of both.
    max_lag_s: largest |lag| searched, seconds. Keep it below half the shortest gap between
      contacts (impacts: 8 video frames), or a neighbouring contact can be matched instead.
    refine: move the best lag to the vertex of the parabola through its neighbours' correlations
      (sub-sample precision; never by more than half a sample).
  Ties in correlation go to the smallest |lag| (lipsync.lag_correlation).
  """
  envelope = np.asarray(envelope, np.float64)
  contacts_signal = np.asarray(contacts_signal, np.float64)
  if envelope.ndim != 1:
    raise ValueError(f"estimate_offset: envelope must be [K], got shape {envelope.shape}")
  if contacts_signal.shape != envelope.shape:
    raise ValueError(f"estimate_offset: contacts_signal shape {contacts_signal.shape} must equal "
                     f"envelope shape {envelope.shape}")
  for name, x in (("envelope", envelope), ("contacts_signal", contacts_signal)):
    if not np.all(np.isfinite(x)):
      raise ValueError(f"estimate_offset: {name} contains NaN or inf")
  rate = _check_rate("rate", rate, "estimate_offset")
  if not (np.isfinite(max_lag_s) and max_lag_s >= 0):
    raise ValueError(f"estimate_offset: max_lag_s={max_lag_s} must be finite and >= 0")
  max_lag = int(np.floor(max_lag_s * rate + 1e-9))
  if envelope.size - max_lag < 2:
    raise ValueError(f"estimate_offset: {envelope.size} samples leave fewer than 2 overlapping at "
                     f"max_lag_s={max_lag_s} (rate {rate})")
  if np.ptp(contacts_signal) == 0.0:  # no contact in the window: nothing to align to
    return OffsetResult(float("nan"), float("nan"), float("nan"), False)
  if np.ptp(envelope) == 0.0:  # no onset at all in the audio: no lag is better than another
    return OffsetResult(float("nan"), 0.0, 0.0, True)
  res = lag_correlation(contacts_signal, envelope, max_lag=max_lag)
  corrs = np.asarray(res["corrs"])
  best = int(res["best_lag_frames"])
  lag = best + (_parabolic_offset(corrs, best + max_lag) if refine else 0.0)
  return OffsetResult(lag / rate, float(res["corr_at_best"]), float(res["corr_at_zero"]), True)


def clip_offset(latents: np.ndarray, frame_rate: float, contact_times_s: np.ndarray, *,
                max_lag_s: float, rate: float | None = None,
                sigma_s: float = DEFAULT_SIGMA_S) -> OffsetResult:
  """`estimate_offset` of one clip's latents `[T, C]` (valid frames only) against its contacts.

  `rate` (default `frame_rate`) is the common rate of both signals; the window is the latents'.
  """
  envelope = onset_envelope(latents, frame_rate, rate=rate)
  rate = float(frame_rate if rate is None else rate)
  signal = contact_signal(contact_times_s, envelope.size, rate, sigma_s=sigma_s)
  return estimate_offset(envelope, signal, rate, max_lag_s)


def summarize(results: Sequence[OffsetResult], *, tol_s: float) -> dict[str, Any]:
  """Aggregate over clips, the same for every arm (model / control / codec) in eval.json.

  Clips without contacts are left out (`n_no_events`). Over the rest (`n_scored`):
  `median_abs_offset_ms` / `median_signed_offset_ms` over defined offsets (NaN if none),
  `frac_within_tol` the fraction with |offset| <= `tol_s` (flat audio counts as outside),
  `mean_peak_corr` the mean best-lag correlation (flat audio counts 0), `n_undefined` the flat ones.
  """
  if not results:
    raise ValueError("summarize: results is empty (no clips to score)")
  if not tol_s >= 0:
    raise ValueError(f"summarize: tol_s={tol_s} must be >= 0")
  scored = [r for r in results if r.has_events]
  offsets = np.asarray([r.offset_s for r in scored], np.float64)
  defined = offsets[np.isfinite(offsets)]
  nan = float("nan")
  return {
    "median_abs_offset_ms": float(np.median(np.abs(defined)) * 1e3) if defined.size else nan,
    "median_signed_offset_ms": float(np.median(defined) * 1e3) if defined.size else nan,
    "frac_within_tol": float(np.sum(np.abs(defined) <= tol_s + 1e-9) / len(scored)) if scored else nan,
    "mean_peak_corr": float(np.mean([r.peak_corr for r in scored])) if scored else nan,
    "tol_ms": tol_s * 1e3,
    "n_clips": len(results), "n_scored": len(scored), "n_no_events": len(results) - len(scored),
    "n_undefined": int(len(scored) - defined.size),
  }


def desync(latents: Sequence[np.ndarray], contacts: Sequence[np.ndarray], frame_rate: float, *,
           max_lag_s: float, tol_s: float, rate: float | None = None,
           sigma_s: float = DEFAULT_SIGMA_S) -> tuple[dict[str, Any], list[OffsetResult]]:
  """Offsets of clips `latents[i]` `[T_i, C]` against `contacts[i]` `[K_i]` seconds, and their
  `summarize`; returns `(summary, per_clip)`."""
  if len(latents) != len(contacts):
    raise ValueError(f"desync: latents ({len(latents)}) and contacts ({len(contacts)}) must "
                     "list the same clips")
  per_clip = [clip_offset(lat, frame_rate, c, max_lag_s=max_lag_s, rate=rate, sigma_s=sigma_s)
              for lat, c in zip(latents, contacts)]
  return summarize(per_clip, tol_s=tol_s), per_clip
