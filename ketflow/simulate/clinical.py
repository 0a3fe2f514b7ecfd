"""Clinical scores of the simulated trial: CAPS-5 and MADRS before and after treatment.

Pre-treatment totals are drawn in the ranges of a moderate-to-severe PTSD sample (CAPS-5,
Weathers et al. 2018, Psychol Assess 30:383-395, range 0-80; MADRS, Montgomery & Asberg 1979,
Br J Psychiatry 134:382-389, range 0-60). The CAPS-5 change is a linear function of the true
imaging change scores, the arm and an arm x imaging-change interaction plus Gaussian noise; the
MADRS change follows the CAPS-5 change (slope ``madrs_slope``) plus its own noise. Totals are
rounded to integers and clipped to the scale range (both add a little noise to the linear model).
"""

from __future__ import annotations

import numpy as np

ACTIVE_ARM = "ketamine"


def clinical_model(interaction: bool = True) -> dict:
    """The true model of the CAPS-5 change (post - pre), as stored in ground_truth.json."""
    drivers = [
        {"measure": "faces_B_fearful_amygdala_L_to_vmPFC", "coefficient": -15.0},
        {"measure": "conflict_dACC_incongruent_minus_congruent", "coefficient": 3.0},
    ]
    for d in drivers:
        d["sign"] = "negative" if d["coefficient"] < 0 else "positive"
    return {
        "outcome": "caps5_total_change",
        "intercept": -4.0,
        "arm_effect": {"arm": ACTIVE_ARM, "coefficient": -4.0},
        "drivers": drivers,
        "interaction": {
            "enabled": bool(interaction),
            "arm": ACTIVE_ARM,
            "measure": "faces_B_fearful_amygdala_L_to_vmPFC",
            "coefficient": -20.0 if interaction else 0.0,
            "sign": "negative",
        },
        "noise_sd": 3.0,
        "null_measures": ["rest_vmPFC_amygdala_coupling"],
        "madrs": {"outcome": "madrs_total_change", "caps5_change_slope": 0.5, "noise_sd": 2.5},
        "pre": {"caps5_total": {"mean": 42.0, "sd": 8.0, "range": [26, 70]},
                "madrs_total": {"mean": 27.0, "sd": 6.0, "range": [12, 45]}},
        "arm_coding": {ACTIVE_ARM: 1, "other": 0},
    }


def caps_change_expected(model: dict, arm: str, change: dict) -> float:
    """Noise-free CAPS-5 change of one subject given its arm and true imaging change scores."""
    active = 1.0 if arm == model["arm_effect"]["arm"] else 0.0
    y = model["intercept"] + model["arm_effect"]["coefficient"] * active
    y += sum(d["coefficient"] * change[d["measure"]] for d in model["drivers"])
    inter = model["interaction"]
    if inter["enabled"]:
        y += inter["coefficient"] * active * change[inter["measure"]]
    return float(y)


def draw_scores(rng: np.random.Generator, model: dict, arm: str, change: dict) -> dict:
    """Pre and post CAPS-5 and MADRS totals (integers) of one subject."""
    out = {}
    for scale in ("caps5_total", "madrs_total"):
        p = model["pre"][scale]
        out[scale] = {"pre": int(np.clip(round(rng.normal(p["mean"], p["sd"])), *p["range"]))}
    d_caps = caps_change_expected(model, arm, change) + rng.normal(0.0, model["noise_sd"])
    m = model["madrs"]
    d_madrs = m["caps5_change_slope"] * d_caps + rng.normal(0.0, m["noise_sd"])
    for scale, delta, top in (("caps5_total", d_caps, 80), ("madrs_total", d_madrs, 60)):
        out[scale]["post"] = int(np.clip(round(out[scale]["pre"] + delta), 0, top))
    return out
