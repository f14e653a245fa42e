"""Occlusion core: equal to Captum Occlusion and MONAI OcclusionSensitivity, exact skipping,
and the map's geometry on an oblique event scan."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ricecli.explain.maps import peak_point, to_event_grid
from ricecli.explain.occlusion import occlusion_maps
from ricecli.explain.positions import coverage_counts, mm_to_voxels, window_starts
from ricecli.spec import ModelSpace, Spec

SMALL = ModelSpace(spacing_mm=(3.0, 3.0, 3.0), size_xyz=(16, 20, 16))


def brain_volume(shape_zyx, channels: int = 3, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random channels inside an ellipsoid 'brain', exactly 0 outside (like prepared cases)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    mask = (zz**2 + yy**2 + xx**2) < 0.55
    vol = rng.normal(size=(channels, *shape_zyx)).astype(np.float32) * mask
    vol[:, 4:8, 5:9, 6:10] += 2.0 * mask[4:8, 5:9, 6:10]  # a bright 'lesion'
    return vol.astype(np.float32), mask.astype(np.uint8)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Whatever ricecli caches goes under RICENET_CACHE: not in the home folder."""
    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(engine, torch net, probability function, spec, incremental stem) of a tiny network."""
    torch = pytest.importorskip("torch")
    from model_fixtures import export_onnx, tiny_ensemble

    from ricecli.explain.incremental import incremental_for
    from ricecli.inference.engine import open_engine
    from ricecli.inference.model import load_model

    spec = Spec(model_space=SMALL)
    ensemble = tiny_ensemble(spec, members=1, seed=3)
    nets = list(ensemble.members)
    for m in nets[0].modules():  # varied BN statistics: the tiny network reacts more
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = export_onnx(ensemble, tmp_path_factory.mktemp("tiny") / "tiny.onnx", spec)
    model = load_model(path)
    engine = open_engine(model, "cpu")
    stem, method = incremental_for(model, engine)
    assert method == "incremental", method  # the torch export fits the split pattern

    def probs(x):
        return torch.softmax(nets[0](x), dim=1)

    return engine, nets[0], probs, spec, stem


def test_window_starts_edges():
    assert window_starts(16, 4, 4).tolist() == [0, 4, 8, 12]
    assert window_starts(16, 4, 4, "clip").tolist() == [0, 4, 8, 12]
    assert window_starts(17, 4, 4).tolist() == [0, 4, 8, 12, 13]  # MONAI: last moved inside
    assert window_starts(17, 4, 4, "clip").tolist() == [0, 4, 8, 12, 16]  # Captum: truncated
    c = coverage_counts((17, 8, 8), (4, 4, 4), (4, 4, 4))
    assert c[13, 0, 0] == 2 and c[12, 0, 0] == 1 and c.min() >= 1
    assert mm_to_voxels(16, (3.0, 3.0, 3.0)) == (5, 5, 5)


def _peers(net, probs, vol, cube, stride, target, fill=0.0):
    """Captum Occlusion and MONAI OcclusionSensitivity maps of p(target) drop, (z, y, x)."""
    import torch
    from captum.attr import Occlusion
    from monai.visualize import OcclusionSensitivity

    x = torch.from_numpy(vol[None])
    with torch.no_grad():
        captum = Occlusion(probs).attribute(
            x, sliding_window_shapes=(vol.shape[0], cube, cube, cube),
            strides=(vol.shape[0], stride, stride, stride), baselines=fill, target=target,
            perturbations_per_eval=16)[0, 0].numpy()
        p0 = probs(x)[0, target].item()
        overlap = 1.0 - stride / cube
        occ, _ = OcclusionSensitivity(net, mask_size=cube, n_batch=16, mode=float(fill),
                                      overlap=overlap, verbose=False)(x)
    monai = p0 - occ[0, target].numpy()
    return captum, monai


@pytest.mark.slow
@pytest.mark.parametrize("cube,stride", [(4, 4), (5, 3)])
def test_map_equals_captum_and_monai(tiny, cube, stride):
    engine, net, probs, spec, stem = tiny
    vol, _ = brain_volume(spec.model_space.shape_zyx)
    captum, monai = _peers(net, probs, vol, cube, stride, target=1)
    from ricecli.explain.incremental import IncrementalNetwork

    deepest = IncrementalNetwork.from_model(engine.model.path, threads=1, depth=99)  # every layer
    for incremental in (None, stem, deepest):  # whole volumes, counted depth, all windowed
        shift = occlusion_maps(vol, engine, spec.channels, (cube,) * 3, (stride,) * 3,
                               target="recurrence", edges="shift", batch=7,
                               incremental=incremental)
        clip = occlusion_maps(vol, engine, spec.channels, (cube,) * 3, (stride,) * 3,
                              target="recurrence", edges="clip", batch=7,
                              incremental=incremental)
        assert np.abs(shift.maps["all"]).max() > 1e-4  # the tiny network does react
        np.testing.assert_allclose(shift.maps["all"], monai, atol=1e-5, rtol=0)
        np.testing.assert_allclose(clip.maps["all"], captum, atol=1e-5, rtol=0)
    assert deepest.depth == deepest.split.max_depth >= 8
    shift = occlusion_maps(vol, engine, spec.channels, (cube,) * 3, (stride,) * 3,
                           target="recurrence", edges="shift", batch=7, incremental=stem)
    clip = occlusion_maps(vol, engine, spec.channels, (cube,) * 3, (stride,) * 3,
                          target="recurrence", edges="clip", batch=7, incremental=stem)
    assert shift.method == clip.method and shift.method.startswith("incremental")
    if (16 - cube) % stride == 0 and (20 - cube) % stride == 0:  # divides: all three agree
        np.testing.assert_allclose(captum, monai, atol=1e-5, rtol=0)
        np.testing.assert_allclose(shift.maps["all"], clip.maps["all"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_skipping_is_exact_and_each_channel(tiny):
    engine, net, probs, spec, stem = tiny
    vol, mask = brain_volume(spec.model_space.shape_zyx)
    args = (vol, engine, spec.channels, (4, 4, 4), (2, 2, 2))
    full = occlusion_maps(*args, skip_unchanged=False, channels="each")
    fast = occlusion_maps(*args, skip_unchanged=True, channels="each", brain_mask=mask,
                          incremental=stem)
    assert fast.positions["skipped_unchanged"] > 0 and full.positions["skipped_unchanged"] == 0
    assert fast.positions["run"] + fast.positions["skipped_unchanged"] \
        + fast.positions["skipped_outside_region"] == full.positions["run"]
    assert sorted(fast.maps) == ["all", "dose", "event", "post_op"]
    for name in full.maps:
        np.testing.assert_allclose(fast.maps[name], full.maps[name], atol=1e-6, rtol=0)
    # per-channel maps are really per channel: occluding only the dose channel differs
    assert np.abs(fast.maps["dose"] - fast.maps["all"]).max() > 1e-5
    # a fill that differs from the outside value (1.0) skips nothing on the fill rule
    ones = occlusion_maps(*args, fill=1.0)
    assert ones.positions["skipped_unchanged"] == 0


@pytest.mark.slow
def test_target_predicted_and_bad_target(tiny):
    engine, net, probs, spec, _stem = tiny
    vol, _ = brain_volume(spec.model_space.shape_zyx)
    m = occlusion_maps(vol, engine, spec.channels, (8, 8, 8), (8, 8, 8), target="predicted")
    assert m.target_index == int(np.argmax(m.p_original))
    from ricecli.errors import RicenetError

    with pytest.raises(RicenetError):
        occlusion_maps(vol, engine, spec.channels, (8, 8, 8), (8, 8, 8), target="tumour")


def _oblique_event() -> sitk.Image:
    """An event scan stored oblique: 1.2 x 1 x 2 mm, rotated direction, odd origin."""
    img = sitk.Image([60, 70, 40], sitk.sitkFloat32)
    img.SetSpacing([1.2, 1.0, 2.0])
    rot = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.4)
    img.SetDirection(rot.GetMatrix())
    img.SetOrigin([-30.0, -25.0, -40.0])
    return img


def test_heatmap_on_oblique_event_grid():
    space = ModelSpace(spacing_mm=(3.0, 3.0, 3.0), size_xyz=(30, 30, 30), center_mm=(0, 0, 0))
    ref = sitk.Image(list(space.size_xyz), sitk.sitkUInt8)
    ref.SetSpacing(space.spacing_mm)
    ref.SetOrigin(space.origin_mm)
    event = _oblique_event()
    # model -> event: a rigid motion (the event head is rotated and shifted in the scanner)
    model_to_event = sitk.Euler3DTransform((0, 0, 0), 0.1, 0.05, -0.2, (5.0, -3.0, 2.0))
    heat = np.zeros(space.shape_zyx, np.float32)
    heat[14:17, 10:13, 18:21] = 1.0  # a blob around model voxel (x=19, y=11, z=15)
    out = to_event_grid(heat, ref, event, model_to_event)
    assert out.GetSize() == event.GetSize()
    assert np.allclose(out.GetSpacing(), event.GetSpacing())
    assert np.allclose(out.GetOrigin(), event.GetOrigin())
    assert np.allclose(out.GetDirection(), event.GetDirection())
    assert out.GetPixelID() == sitk.sitkFloat32
    # the blob's centre of mass lands where the transform sends it (a wrong direction of the
    # transform would miss by ~2x its 6 mm shift plus the rotation)
    arr = sitk.GetArrayFromImage(out)
    idx = np.argwhere(arr > 0)[:, ::-1]  # (x, y, z)
    pts = np.array([out.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx])
    centre = (pts * arr[arr > 0][:, None]).sum(0) / arr[arr > 0].sum()
    expected = np.asarray(model_to_event.TransformPoint(ref.TransformIndexToPhysicalPoint(
        (19, 11, 15))))
    assert np.linalg.norm(centre - expected) < 1.0
    index, peak = peak_point(out)
    assert arr[index[::-1]] == arr.max() and np.linalg.norm(np.asarray(peak) - expected) < 6
