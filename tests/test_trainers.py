"""Smoke tests of the IFAN and DefocusGAN trainers and their losses: tiny patches, two steps, resume.

No ../shared needed: the training data is synthesised from a generated test photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defocus_cli.cli.exit_codes import exit_code

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-patch cache (48 px) made by the real synthetic DP generator from a generated 'photo'."""
    from defocus_cli.data import make_patch_cache

    d = tmp_path_factory.mktemp("trainers")
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.random((12, 16, 3)).astype(np.float32), (160, 120), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):  # hard edges so blur matters
        x, y, r = (int(v) for v in rng.integers(10, 110, size=3) % 100)
        cv2.circle(img, (x + 20, y + 10), r // 4 + 3, tuple(float(c) for c in rng.random(3)), -1)
    photo = d / "photo.png"
    cv2.imwrite(str(photo), (np.clip(img, 0, 1) * 255).astype(np.uint8))
    return make_patch_cache(d / "cache.pt", 6, patch=48, seed=3, photos=[photo])


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ifan_identity_start() -> None:
    from defocus_cli.archs.ifan import IFAN
    from defocus_cli.train.ifan import init_identity

    torch.manual_seed(0)
    model = IFAN().eval()
    x = torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        assert not torch.allclose(model(x), x, atol=1e-3)  # a random net is not the identity...
        init_identity(model)
        assert torch.allclose(model(x), x, atol=1e-6)  # ...but the trainer's starting point is


def test_warp_horizontal_shifts_by_disparity() -> None:
    from defocus_cli.train.ifan import warp_horizontal

    img = torch.arange(10, dtype=torch.float32).view(1, 1, 1, 10).expand(1, 1, 3, 10).contiguous()
    out = warp_horizontal(img, torch.full((1, 1, 3, 10), 2.0))
    assert torch.allclose(out[..., :8], img[..., 2:])


def test_ifan_trainer_two_steps_and_resume(cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.train.common import load_checkpoint
    from defocus_cli.train.ifan import IFANTrainConfig, train_config

    cfg = IFANTrainConfig(run=str(tmp_path / "run"), cache=[str(cache_file)], patch=32, batch=1, steps=2,
                          export=str(tmp_path / "ifan.safetensors"), val_root=None)
    s = train_config(cfg)
    assert s["step"] == 2
    first = load_checkpoint(tmp_path / "run" / "last.pt")
    logs = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(logs) == 2 and '"deblur"' in logs[0] and '"reblur"' in logs[0] and '"dme_warp"' in logs[0]
    # resuming with the step budget already spent changes nothing
    assert train_config(cfg)["step"] == 2
    again = load_checkpoint(tmp_path / "run" / "last.pt")
    assert _state_equal(first["model"], again["model"]) and _state_equal(first["reblur"], again["reblur"])
    # resuming continues from step 2
    cfg.steps = 3
    assert train_config(cfg)["step"] == 3
    third = load_checkpoint(tmp_path / "run" / "last.pt")
    assert not _state_equal(first["model"], third["model"])
    # the export (no validation: the final weights) records the defocus-map scale as its own metadata key
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ifan.safetensors"), "pt") as f:
        assert f.metadata()["dme_to_coc"] == "-16.0"


def test_reblur_net_starts_as_identity() -> None:
    from defocus_cli.train.ifan import ReblurNet

    net = ReblurNet()
    sharp = torch.rand(2, 3, 6, 7)
    assert torch.allclose(net(torch.randn(2, 128, 6, 7), sharp), sharp, atol=1e-6)


def test_defocusgan_map_trainer_two_steps(cache_file: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from defocus_cli.train.defocusgan_map import MapTrainConfig, train_config

    out = tmp_path / "map.safetensors"
    cfg = MapTrainConfig(run=str(tmp_path / "map"), cache=[str(cache_file)], patch=32, batch=1, steps=2,
                         levels=6, map_first=1, alt_steps=1, export=str(out))
    s = train_config(cfg)
    assert s["step"] == 2 and np.isfinite(s["last_coc_mae_px"])
    phases = [line for line in (tmp_path / "map" / "log.jsonl").read_text().splitlines()]
    assert '"map"' in phases[0] and '"bank"' in phases[1]  # alternation happened
    ck = torch.load(tmp_path / "map" / "last.pt", weights_only=True)
    bank = ck["bank_l"]["pos"]
    assert float(bank.min()) >= 0 and torch.allclose(bank.sum(dim=(-2, -1)), torch.ones(6, 1), atol=1e-5)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["arch"] == "defocusgan-map" and len(list(f.keys())) == 324


def test_defocusgan_map_trainer_banks_reblur_their_own_view(cache_file: Path, tmp_path: Path) -> None:
    """The trainer compares bank_l's re-blur with the left view, so bank_l must be the ``view="left"`` bank
    (BlurKernelBank convolves like the data generator; see test_defocusgan's generator-orientation test)."""
    from defocus_cli.archs.defocusgan_map import BlurKernelBank
    from defocus_cli.train.defocusgan_map import MapTrainConfig, train_config

    cfg = MapTrainConfig(run=str(tmp_path / "map0"), cache=[str(cache_file)], patch=32, batch=1, steps=0,
                         levels=6, export=None)
    train_config(cfg)  # no steps: saves the freshly initialised banks
    ck = torch.load(tmp_path / "map0" / "last.pt", weights_only=True)
    for key, view in (("bank_l", "left"), ("bank_r", "right")):
        ref = BlurKernelBank(6, view=view).state_dict()
        assert all(torch.equal(ck[key][k], ref[k]) for k in ref), f"{key} is not the {view!r} bank"


def test_cross_reblur_loss_is_smallest_at_the_true_signed_coc() -> None:
    """L ∗ K_R(c) = R ∗ K_L(c) holds at the true c only: not at 0, not at −c (the sign), not at 2c."""
    from defocus_cli.archs.defocusgan_map import BlurKernelBank
    from defocus_cli.train.defocusgan_map import cross_reblur_loss

    torch.manual_seed(0)
    sharp = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 64, 64), 3, 1, 1)
    bl, br = BlurKernelBank(9, view="left"), BlurKernelBank(9, view="right")
    for c0 in (3.0, -4.0):
        c = torch.full((1, 1, 64, 64), c0)
        left, right = bl(sharp, c), br(sharp, c)
        at = {t: cross_reblur_loss(torch.full_like(c, t), left, right, bl, br).item() for t in (0.0, c0, -c0, 2 * c0)}
        assert at[c0] < 0.3 * min(at[0.0], at[-c0], at[2 * c0]), at


def _real_dp_folder(root: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    rng = np.random.default_rng(1)
    for sub in ("left", "right"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for nm in names:
        base = cv2.GaussianBlur(rng.random((40, 48)).astype(np.float32), (0, 0), 1.0)
        for sub, shift in (("left", 1), ("right", -1)):
            v = np.roll(base, shift, axis=1) * 8000 + 1024
            cv2.imwrite(str(root / sub / f"{nm}.png"), v.astype(np.uint16))
    return root


def test_real_dp_crops_shapes_and_scenes(tmp_path: Path) -> None:
    from defocus_cli.train.defocusgan_map import RealDPCrops

    root = _real_dp_folder(tmp_path / "dp", ("a", "b", "c"))
    crops = RealDPCrops(str(root), "a,c", black=1024, scales="1.0,0.5", patch=16, seed=0)
    assert crops.names == ["a", "c"] and len(crops.views) == 4  # 2 scenes x 2 scales (20x24 ≥ 16)
    b = crops.sample(3)
    assert b["left"].shape == (3, 3, 16, 16) and b["right"].shape == (3, 3, 16, 16)
    assert 0 <= float(b["left"].min()) and float(b["left"].max()) <= 1
    assert torch.equal(b["left"][:, 0], b["left"][:, 2])  # grey replicated to RGB
    assert not torch.equal(b["left"], b["right"])


def test_real_dp_crops_pseudo_labels_follow_the_crop(tmp_path: Path) -> None:
    """pseudo=True: the classical matcher's map and confidence are cropped (and flipped) with the views."""
    from defocus_cli.map_classical import dp_radius_map_conf
    from defocus_cli.train.defocusgan_map import RealDPCrops

    root = _real_dp_folder(tmp_path / "dp", ("a",))
    crops = RealDPCrops(str(root), "a", black=1024, scales="1.0", patch=40, seed=3, pseudo=True)
    sa, sb, radius, conf = crops.views[0]
    ref_r, ref_c = dp_radius_map_conf(sa, sb)
    np.testing.assert_array_equal(radius, ref_r)
    flips = set()
    for _ in range(8):
        b = crops.sample(1)
        assert b["pseudo"].shape == (1, 1, 40, 40) and b["conf"].shape == (1, 1, 40, 40)
        assert 0 <= float(b["conf"].min()) and float(b["conf"].max()) <= 1
        left = b["left"][0, 0].numpy()
        found = [(x, f) for x in range(9) for f in (False, True)
                 if np.array_equal(left, sa[:, x:x + 40][::-1] if f else sa[:, x:x + 40])]
        assert len(found) == 1, found  # the 40x48 views give 9 crop positions, each maybe flipped
        x0, flipped = found[0]
        want = ref_r[:, x0:x0 + 40][::-1] if flipped else ref_r[:, x0:x0 + 40]
        np.testing.assert_array_equal(b["pseudo"][0, 0].numpy(), want)
        flips.add(flipped)
    assert flips == {True, False}
    assert "pseudo" not in RealDPCrops(str(root), "a", black=1024, scales="1.0", patch=40).sample(1)


def test_pseudo_label_loss_weights_by_confidence() -> None:
    from defocus_cli.train.defocusgan_map import pseudo_label_loss

    pred = torch.zeros(1, 1, 2, 2)
    pseudo = torch.tensor([[[[1.0, 5.0], [1.0, 5.0]]]])
    conf = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert pseudo_label_loss(pred, pseudo, conf).item() == pytest.approx(1.0)  # the 5 px pixels have no weight
    assert pseudo_label_loss(pred, pseudo, torch.zeros_like(conf)).item() == 0.0


def test_defocusgan_map_trainer_with_real_pairs(cache_file: Path, tmp_path: Path) -> None:
    """w_cross > 0 with real_dir: the cross re-blur term is logged in both phases, the real kernel banks are
    checkpointed, trained in the bank phase and stay blur kernels; grey turns the synthetic views grey."""
    from defocus_cli.archs.defocusgan_map import BlurKernelBank
    from defocus_cli.train.defocusgan_map import MapTrainConfig, _to_grey_batch, train_config

    root = _real_dp_folder(tmp_path / "dp")
    cfg = MapTrainConfig(run=str(tmp_path / "mr"), cache=[str(cache_file)], patch=32, batch=1, steps=2,
                         levels=6, map_first=1, alt_steps=1, export=None, real_dir=str(root), real_scales="1.0",
                         real_batch=1, real_levels=4, w_cross=5.0, lr_bank=1e-2, grey=True, w_pseudo=0.5)
    s = train_config(cfg)
    assert s["step"] == 2
    rows = [json.loads(line) for line in (tmp_path / "mr" / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["map", "bank"]
    assert np.isfinite(rows[0]["pseudo"]) and "pseudo" not in rows[1]  # the pseudo-label term trains the map net
    assert all(np.isfinite(r["cross"]) for r in rows) and "real_abs_coc" in rows[0]
    ck = torch.load(tmp_path / "mr" / "last.pt", weights_only=True)
    ref = BlurKernelBank(4, view="left").state_dict()
    pos = ck["real_l"]["pos"]
    assert not torch.equal(pos, ref["pos"])  # the bank phase trained the real bank
    assert float(pos.min()) >= 0 and torch.allclose(pos.sum(dim=(-2, -1)), torch.ones(4, 1), atol=1e-5)
    g = _to_grey_batch({"left": torch.rand(1, 3, 4, 4), "coc": torch.rand(1, 1, 4, 4)})
    assert torch.equal(g["left"][:, 0], g["left"][:, 1]) and g["coc"].shape == (1, 1, 4, 4)


def test_defocusgan_trainer_with_critic(cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.train.defocusgan import GANTrainConfig, curriculum_iter, train_config

    cfg = GANTrainConfig(run=str(tmp_path / "gan"), cache=[str(cache_file)], patch=32, batch=1, steps=2,
                         anneal_steps=1, critic_start=0, adv_start=1, w_perc=0.05, export=None)
    s = train_config(cfg)
    assert s["step"] == 2
    lines = (tmp_path / "gan" / "log.jsonl").read_text().splitlines()
    assert '"critic"' in lines[0] and '"adv"' in lines[1] and '"perc"' in lines[0]
    assert curriculum_iter(0, 300) == 0 and curriculum_iter(300, 300) >= 2e4


def test_defocusgan_identity_init_and_pinning() -> None:
    """The identity init returns the input to ~50 dB through the official layout, every path included (the
    curriculum masks too), and a pinned Adam step leaves the ramp rows exactly as they were."""
    from defocus_cli.archs.defocusgan import DefocusGAN
    from defocus_cli.train.defocusgan import _identity_rows, identity_init, pin_identity_grads

    torch.manual_seed(0)
    gen = DefocusGAN()
    ramps = identity_init(gen)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        y = gen(x)
        y_train = gen.forward_train(x, torch.full((2, 1, 48, 64), 5.0), iter_num=0.0)
    for out in (y, y_train):
        psnr = -10.0 * torch.log10(((out - x) ** 2).mean())
        assert float(psnr) > 45.0, float(psnr)
    pinned = [(p.detach().clone(), p, dim) for p, dim in _identity_rows(gen)]
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    gen.forward_train(x, torch.zeros(2, 1, 48, 64), iter_num=3e4).sub(torch.rand_like(x)).abs().mean().backward()
    pin_identity_grads(gen)
    opt.step()
    idx = torch.tensor(ramps)
    for before, p, dim in pinned:
        assert torch.equal(before.index_select(dim, idx), p.detach().index_select(dim, idx))
    moved = gen.tail_hard[0].weight.detach()[:, len(ramps):]
    assert float(moved.abs().max()) > 0  # the free channels do learn


def test_defocusgan_tied_taps_upsample_without_grid() -> None:
    """Tied 2x2/2 transposed convs equal nearest x2 + 1x1 conv (no period-2 pattern), before and after an Adam
    step with tied gradients; untied random taps do make a pattern (the test can fail)."""
    from torch.nn import functional as F

    from defocus_cli.archs.defocusgan import DefocusGAN
    from defocus_cli.train.defocusgan import tie_transposed_taps

    torch.manual_seed(0)
    gen = DefocusGAN()
    convs = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 2
    x = torch.rand(1, convs[0].in_channels, 6, 5)

    def grid(conv: torch.nn.ConvTranspose2d) -> float:
        with torch.no_grad():
            y = conv(x)
            w = conv.weight[:, :, :1, :1].transpose(0, 1)  # (out, in, 1, 1) of tap (0, 0)
            z = F.interpolate(F.conv2d(x, w, conv.bias), scale_factor=2, mode="nearest")
        return float((y - z).abs().max())

    assert grid(convs[0]) > 1e-2
    tie_transposed_taps(gen)
    assert grid(convs[0]) < 1e-5 and grid(convs[1]) < 1e-5
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    img = torch.rand(1, 3, 32, 32)
    gen(img).sub(torch.rand_like(img)).abs().mean().backward()
    tie_transposed_taps(gen, grads=True)
    opt.step()
    assert grid(convs[0]) < 1e-5 and grid(convs[1]) < 1e-5


def test_losses() -> None:
    from defocus_cli.archs.defocusgan_disc import PatchDiscriminator
    from defocus_cli.train.losses import PerceptualLoss, critic_loss_wgan_gp, defocus_weight, tv_loss

    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    for mode in ("lpips", "conv3"):
        perc = PerceptualLoss(mode)
        assert float(perc(a, a)) < 1e-6 < float(perc(a, b))
    coc = torch.zeros(1, 1, 64, 64)
    coc[..., 32:] = -10.0
    w = defocus_weight(coc, (4, 4))
    assert torch.allclose(w[..., :2], torch.ones(1, 1, 4, 2)) and torch.allclose(w[..., 2:], torch.full((1, 1, 4, 2), 2.0))
    loss, logs = critic_loss_wgan_gp(PatchDiscriminator(), a, b, coc)
    assert torch.isfinite(loss) and logs["gp"] >= 0
    assert float(tv_loss(torch.ones(1, 1, 5, 5))) == 0.0 < float(tv_loss(a))


def test_evaluate_helpers(cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.data import PatchCache
    from defocus_cli.train.evaluate import before_after_figure, map_figure, score_map, score_synthetic

    test = PatchCache(cache_file, augment=False).batch([0, 1])
    ident = torch.nn.Identity()
    s = score_synthetic(ident, test)
    assert abs(s["psnr"] - s["input_psnr"]) < 0.2 and s["n"] == 2  # identity output = input (8-bit rounding)

    class Oracle(torch.nn.Module):
        def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
            return self.coc

    oracle = Oracle()
    oracle.coc = test["coc"][:1]
    m = score_map(oracle, {k: v[:1] for k, v in test.items()})
    assert m["coc_mae_px"] < 1e-6 and m["n"] == 1
    fig = map_figure(oracle, {k: v[:1] for k, v in test.items()}, tmp_path / "map.png", count=1)
    img = cv2.imread(str(fig))
    assert img is not None and img.shape[1] == 3 * 48 + 16
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), (test["blur"][0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255).astype(np.uint8))
    fig2 = cv2.imread(str(before_after_figure(ident, [photo], tmp_path / "ba.png", crop=32)))
    assert fig2.shape[:2] == (32, 72)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine look CUDA-less, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("model", ["sftnet", "ifan", "defocusgan", "defocusgan-map"])
def test_trainers_refuse_an_unavailable_device_before_creating_anything(model: str, cache_file: Path,
                                                                       tmp_path: Path, no_cuda: None) -> None:
    from defocus_cli.errors import DeviceError
    from defocus_cli.train import TrainOptions, run

    opts = TrainOptions(model=model, cache=[cache_file], steps=1, patch=32, batch=1, device="cuda",
                        run_dir=tmp_path / "r", out=tmp_path / "w.safetensors")
    with pytest.raises(DeviceError, match="use --device cpu") as e:
        run(opts)
    assert exit_code(e.value) == 4 and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()


def test_cuda_index_beyond_the_visible_gpus_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from defocus_cli.errors import DeviceError, UsageError
    from defocus_cli.train.common import train_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        train_device("cuda:3")
    with pytest.raises(UsageError):
        train_device("gpu")
    assert train_device("cpu") == torch.device("cpu") and train_device(None) == torch.device("cpu")


@pytest.mark.parametrize("model", ["sftnet", "ifan", "defocusgan", "defocusgan-map"])
def test_cli_train_without_cuda_is_one_line_exit_4(model: str, cache_file: Path, tmp_path: Path,
                                                   no_cuda: None) -> None:
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    r = CliRunner().invoke(app, ["train", model, "--cache", str(cache_file), "--device", "cuda", "--steps", "1",
                                 "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "w.safetensors")])
    assert r.exit_code == 4, r.output
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: --device cuda requested but CUDA is not available")
    assert "use --device cpu" in err[0] and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


def test_checkpoints_hold_cpu_tensors_and_batches_follow_the_device(tmp_path: Path) -> None:
    from defocus_cli.train.common import RunDir, load_checkpoint, to_cpu

    nested = {"a": torch.ones(2), "b": [torch.zeros(1), (torch.ones(1), 3)], "c": "x"}
    moved = to_cpu(nested)
    assert isinstance(moved["b"], list) and isinstance(moved["b"][1], tuple) and moved["b"][1][1] == 3
    assert moved["c"] == "x" and torch.equal(moved["a"], nested["a"])
    run = RunDir(tmp_path / "r")
    run.save({"model": torch.nn.Linear(2, 2).state_dict(), "step": 1})
    assert all(t.device.type == "cpu" for t in load_checkpoint(run.last)["model"].values())


def test_batch_stream_passes_the_camera_true_knobs(tmp_path: Path) -> None:
    from defocus_cli.train.sources import batch_stream

    rng = np.random.default_rng(1)
    for i in range(3):
        img = cv2.resize(rng.random((12, 16, 3)).astype(np.float32), (160, 120), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(tmp_path / f"p{i}.png"), (img * 255).astype(np.uint8))
    b = next(batch_stream(photos=tmp_path, patch=32, batch=3, seed=0, device="cpu", coc_px=4.0))
    assert b["blur"].shape == (3, 3, 32, 32) and b["blur"].device.type == "cpu"
    assert float(b["coc"].abs().max()) <= 4.0 + 1e-4
    # without coc_px the range is photo-relative (about 2.4 px at 160 px), so a radius above 4 px is coc_px's
    wide = next(batch_stream(photos=tmp_path, patch=32, batch=3, seed=0, coc_px=12.0))
    assert float(wide["coc"].abs().max()) > 4.0


def test_ifan_and_defocusgan_bf16_autocast_step_on_cpu(cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.train.defocusgan import GANTrainConfig
    from defocus_cli.train.defocusgan import train_config as train_gan
    from defocus_cli.train.ifan import IFANTrainConfig
    from defocus_cli.train.ifan import train_config as train_ifan

    s = train_ifan(IFANTrainConfig(run=str(tmp_path / "i"), cache=[str(cache_file)], patch=32, batch=1, steps=1,
                                   export=None, bf16=True, device="cpu", threads=1))
    assert s["step"] == 1
    s = train_gan(GANTrainConfig(run=str(tmp_path / "g"), cache=[str(cache_file)], patch=32, batch=1, steps=1,
                                 export=None, bf16=True, device="cpu", threads=1, w_perc=0.0, critic_start=0,
                                 adv_start=0))
    assert s["step"] == 1


def test_sftnet_stops_at_its_wall_clock_limit(cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.train import TrainOptions, run
    from defocus_cli.train.common import load_checkpoint

    opts = TrainOptions(model="sftnet", cache=[cache_file], steps=30, patch=32, batch=1, threads=1,
                        run_dir=tmp_path / "r", out=tmp_path / "w.safetensors", extra={"minutes": 1e-9})
    summary = run(opts)
    assert summary["steps"] == 0 and load_checkpoint(tmp_path / "r" / "last.pt")["step"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", ["sftnet", "ifan", "defocusgan", "defocusgan-map"])
def test_trainers_on_cuda_resume_on_cpu(model: str, cache_file: Path, tmp_path: Path) -> None:
    from defocus_cli.train import TrainOptions, run
    from defocus_cli.train.common import load_checkpoint

    opts = TrainOptions(model=model, cache=[cache_file], steps=2, patch=32, batch=2, device="cuda",
                        run_dir=tmp_path / "r", out=tmp_path / "w.safetensors", threads=1)
    assert run(opts)["steps"] == 2
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert all(t.device.type == "cpu" for t in ck["model"].values())
    opts.device, opts.steps, opts.resume = "cpu", 3, True
    assert run(opts)["steps"] == 3
