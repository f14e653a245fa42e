"""Derive ricecli's compact brain template from the MNI ICBM152 2009 copy that nilearn bundles.

Writes ricecli/data/template/{t1,gm,wm}.nii.gz (uint8, 1 mm, cropped to the brain) and
NOTICE. Run once from a checkout: python scripts/make_template.py (needs nilearn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

NOTICE = """\
Derived from the MNI ICBM152 non-linear symmetric 2009a atlas (T1 template, GM and WM
probability maps) as bundled by nilearn (BSD-3-Clause), cropped to the brain and stored
as uint8 (value/255) by scripts/make_template.py.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University.
Permission to use, copy, modify, and distribute this software and its documentation for
any purpose and without fee is hereby granted, provided that the above copyright notice
appear in all copies. The authors and McGill University make no representations about
the suitability of this software for any purpose. It is provided "as is" without express
or implied warranty. The authors are not responsible for any data loss, equipment
damage, property loss, or injury to subjects or patients resulting from the use or
misuse of this software package.

Reference: V.S. Fonov, A.C. Evans, K. Botteron, C.R. Almli, R.C. McKinstry,
D.L. Collins and BDCG, Unbiased average age-appropriate atlases for pediatric studies,
NeuroImage 54(1), 2011; V.S. Fonov et al., Unbiased nonlinear average age-appropriate
brain templates from birth to adulthood, NeuroImage 47, S102, 2009.
"""


def main() -> None:
    import nilearn

    src = Path(nilearn.__file__).parent / "datasets" / "data"
    out = Path(__file__).resolve().parents[1] / "ricecli" / "data" / "template"
    out.mkdir(parents=True, exist_ok=True)
    names = {
        "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    }
    images = {k: sitk.ReadImage(str(src / v), sitk.sitkFloat32) for k, v in names.items()}
    t1 = sitk.GetArrayFromImage(images["t1"])
    nz = np.argwhere(t1 > 0.05)
    lo = np.maximum(nz.min(0) - 4, 0)
    hi = np.minimum(nz.max(0) + 5, t1.shape)
    for key, img in images.items():
        arr = sitk.GetArrayFromImage(img)
        arr = arr / max(float(arr.max()), 1e-6)
        crop = img[int(lo[2]) : int(hi[2]), int(lo[1]) : int(hi[1]), int(lo[0]) : int(hi[0])]
        sub = arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        u8 = sitk.GetImageFromArray(np.clip(np.rint(sub * 255), 0, 255).astype(np.uint8))
        u8.CopyInformation(crop)
        sitk.WriteImage(u8, str(out / f"{key}.nii.gz"), useCompression=True)
    (out / "NOTICE").write_text(NOTICE)
    sizes = [f"{(out / f'{k}.nii.gz').stat().st_size / 1e6:.2f} MB" for k in names]
    print("template written to", out, "sizes", sizes)


if __name__ == "__main__":
    main()
