"""The 2D-to-3D LiftModel: network shape, cameras and projection, data, metrics, training and the sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from training.documents.lift import bench as lift_bench
from training.documents.lift import data as lift_data
from training.documents.lift import task as lift_task
from training.documents.lift.metrics import mpjpe, pa_mpjpe
from training.documents.lift.model import LiftConfig, LiftModel, n_parameters
from training.motion.skeleton import BODY


def test_report_network_layers_and_parameter_count():
    model = LiftModel(LiftConfig())
    assert (model.inp.in_features, model.inp.out_features) == (30, 1024)
    assert (model.out.in_features, model.out.out_features) == (1024, 45)
    assert len(model.blocks) == 2
    for block in model.blocks:
        kinds = [type(m).__name__ for m in block.net]
        assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2
        assert all(m.p == 0.5 for m in block.net if isinstance(m, torch.nn.Dropout))
        assert all(m.in_features == m.out_features == 1024 for m in block.net if isinstance(m, torch.nn.Linear))
    n = sum(p.numel() for p in model.parameters())
    assert n == 4_284_461 == n_parameters(LiftConfig())
    assert model(torch.randn(8, 15, 2)).shape == (8, 15, 3)


@pytest.mark.parametrize("hidden,blocks,dropout", [(256, 1, 0.0), (512, 3, 0.9999)])
def test_network_is_configurable(hidden, blocks, dropout):
    cfg = LiftConfig(hidden=hidden, blocks=blocks, dropout=dropout)
    model = LiftModel(cfg)
    assert len(model.blocks) == blocks and model.inp.out_features == hidden
    assert sum(p.numel() for p in model.parameters()) == n_parameters(cfg)
    assert model.blocks[0].net[3].p == dropout


def test_residual_block_adds_its_input():
    model = LiftModel(LiftConfig(hidden=16, blocks=1, dropout=0.0)).eval()
    block = model.blocks[0]
    for m in block.net:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    x = torch.randn(4, 16)
    assert torch.allclose(block(x), x)


def test_normalisation_is_inside_the_model():
    """The model reads pixels and returns millimetres whatever the training statistics."""
    model = LiftModel(LiftConfig(hidden=32, blocks=1, dropout=0.0))
    x, y = torch.randn(100, 15, 2) * 50 + 3, torch.randn(100, 15, 3) * 200 - 7
    model.set_normalisation(x, y)
    assert torch.allclose(model.out_mean, y.reshape(100, -1).double().mean(0).float())
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    model.eval()
    # zero output layer: the prediction is the training mean, in mm
    assert torch.allclose(model(x[:3]), y.mean(0).expand(3, 15, 3), atol=1e-3)


def test_known_camera_projection():
    """A camera 5 m behind the origin on -Z looking at it: the origin is at the principal point, +X world
    is image left (the camera looks along +Z), +Y world (up) is image up, and offsets scale by f / depth."""
    intr = lift_data.Intrinsics(focal=1000.0, cx=500.0, cy=400.0)
    eye, target = np.array([[0.0, 0.0, -5000.0]]), np.zeros((1, 3))
    rot = lift_data.look_at(eye, target)
    np.testing.assert_allclose(rot[0], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    pts = np.array([[[0.0, 0.0, 0.0], [1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0], [0.0, 0.0, 5000.0]]])
    cam = lift_data.world_to_camera(pts, rot, eye[0][None])
    np.testing.assert_allclose(cam[0, :, 2], [5000, 5000, 5000, 10000])
    px = lift_data.project(cam, intr)
    np.testing.assert_allclose(px[0], [[500, 400], [300, 400], [500, 200], [500, 400]], atol=1e-9)
    np.testing.assert_allclose(lift_data.unproject(px, cam[..., 2], intr), cam, atol=1e-9)
    np.testing.assert_allclose(lift_data.camera_to_world(cam, rot, eye), pts, atol=1e-9)


def test_random_cameras_look_at_their_target_and_invert():
    rng = np.random.default_rng(3)
    rig = lift_data.CameraRig()
    targets = rng.normal(size=(200, 3)) * 1000
    rot, eye = lift_data.random_cameras(rng, targets, rig)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_allclose(rot[:, 0, 1], 0.0, atol=1e-12)  # no roll: the image x axis stays horizontal
    dist = np.linalg.norm(eye - targets, axis=-1)
    assert dist.min() >= rig.distance_mm[0] and dist.max() <= rig.distance_mm[1]
    elevation = np.rad2deg(np.arcsin((eye - targets)[:, 1] / dist))
    assert elevation.min() >= rig.elevation_deg[0] - 1e-9 and elevation.max() <= rig.elevation_deg[1] + 1e-9
    cam_t = lift_data.world_to_camera(targets[:, None], rot, eye)
    np.testing.assert_allclose(lift_data.project(cam_t)[:, 0], [[500.0, 500.0]] * 200, atol=1e-6)
    pts = targets[:, None] + rng.normal(size=(200, 15, 3)) * 500
    cam = lift_data.world_to_camera(pts, rot, eye)
    back = lift_data.unproject(lift_data.project(cam), cam[..., 2])
    np.testing.assert_allclose(lift_data.camera_to_world(back, rot, eye), pts, atol=1e-6)


def test_lift_joints_are_fifteen_body_joints():
    assert len(lift_data.LIFT_JOINTS) == 15 == len(set(lift_data.LIFT_JOINTS))
    assert lift_data.ROOT_JOINT not in lift_data.LIFT_JOINTS
    root, joints = lift_data.joint_indices()
    assert BODY.joints[root] == "Hips" and all(0 <= j < 22 for j in joints)


def test_make_set_is_root_relative_seeded_and_consistent():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(20, 16, 3)) * 300 + np.array([1000.0, 900.0, -500.0])
    a = lift_data.make_set(pos, 2, np.random.default_rng(7))
    b = lift_data.make_set(pos, 2, np.random.default_rng(7))
    c = lift_data.make_set(pos, 2, np.random.default_rng(8))
    assert a.x2d.shape == (40, 15, 2) and a.y3d.shape == (40, 15, 3) and len(a) == 40
    np.testing.assert_array_equal(a.x2d, b.x2d)
    assert not np.allclose(a.x2d, c.x2d)
    # bone lengths survive the rigid camera transform (mm, root-relative)
    rel = pos[:, 1:] - pos[:, :1]
    np.testing.assert_allclose(np.linalg.norm(a.y3d[::2], axis=-1), np.linalg.norm(rel, axis=-1), rtol=1e-5)
    # 2D is the projection of the absolute camera-frame 3D, relative to the root's pixel
    absolute = a.y3d.astype(np.float64) + a.root_cam[:, None]
    np.testing.assert_allclose(lift_data.project(absolute) - a.root_px[:, None], a.x2d, atol=1e-2)


def test_metrics_on_known_poses():
    gt = np.zeros((2, 4, 3))
    pred = gt.copy()
    pred[..., 0] = 3.0
    pred[..., 1] = 4.0
    assert mpjpe(pred, gt) == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(6, 15, 3)) * 300
    rot = Rotation.random(6, random_state=2).as_matrix()
    moved = 1.7 * np.einsum("nij,nkj->nki", rot, gt) + rng.normal(size=(6, 1, 3)) * 100
    assert mpjpe(moved, gt) > 100
    assert pa_mpjpe(moved, gt) == pytest.approx(0.0, abs=1e-8)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection is not a rotation: not aligned away
    assert pa_mpjpe(mirrored, gt) > 50
    noisy = gt + rng.normal(size=gt.shape) * 20
    assert pa_mpjpe(noisy, gt) < mpjpe(noisy, gt)


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads on a tiny model spin for minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_overfits_a_tiny_batch(one_thread):
    torch.manual_seed(0)
    pos = np.random.default_rng(0).normal(size=(32, 16, 3)) * 300 + np.array([0.0, 900.0, 0.0])
    data = lift_data.make_set(pos, 1, np.random.default_rng(0))
    x, y = torch.from_numpy(data.x2d), torch.from_numpy(data.y3d)
    model = LiftModel(LiftConfig(hidden=256, blocks=2, dropout=0.0))
    model.set_normalisation(x, y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    first = lift_task.mpjpe_loss(model(x), y).item()
    for _ in range(300):
        loss = lift_task.mpjpe_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    final = lift_task.mpjpe_loss(model(x), y).item()
    assert first > 200 and final < 0.1 * first


def test_sweep_plan_has_the_four_tables_in_nine_runs():
    base = lift_task.LiftTaskConfig()
    runs = dict(lift_bench.plan(base))
    assert len(runs) == 9 and next(iter(runs)) == "base" and runs["base"] == base
    assert {runs["dropout=0.9999"].dropout, runs["lr=1"].lr, runs["hidden=256"].hidden, runs["blocks=3"].blocks} == {
        0.9999, 1.0, 256, 3}
    assert isinstance(runs["hidden=512"].hidden, int)
    rows = sum(len(values) for _, values in lift_bench.TABLES.values())
    assert rows == 12


def test_lift_data_from_real_files(data_root):
    test = lift_data.files_for("test", root=data_root, max_files=2)
    assert len(test) == 2 and all(f.suffix == ".bvh" for f in test)
    train, val = lift_data.files_for("train", root=data_root), lift_data.files_for("val", root=data_root)
    assert not set(train) & set(val) and len(val) == len(train + val) // 10
    assert not set(train + val) & set(lift_data.files_for("test", root=data_root))
    s = lift_data.build("test", max_files=2, cameras_per_pose=2, root=data_root)
    again = lift_data.build("test", max_files=2, cameras_per_pose=2, root=data_root)
    np.testing.assert_array_equal(s.x2d, again.x2d)
    bones = np.linalg.norm(s.y3d, axis=-1)  # distances from the Hips: a human, in millimetres
    assert 300 < np.median(bones) < 1500 and bones.max() < 2000
    assert np.all(s.root_cam[:, 2] > 2500)  # the subject is in front of the camera
    assert np.abs(s.x2d).max() < 500  # and inside the 1000 x 1000 image


@pytest.mark.slow
def test_train_lift_end_to_end(data_root, tmp_path):
    """``anyfill train lift`` on a few files: trains, writes checkpoints and the test metrics."""
    from training.train import main

    run_dir = tmp_path / "lift"
    assert main(["lift", "trainer.threads=1", "trainer.progress=false", "max_files=3", "hidden=64",
                 "dropout=0", "--run-dir", str(run_dir), f"data_root={data_root}"]) == 0
    metrics = json.loads((run_dir / lift_task.METRICS_FILE).read_text())
    assert set(metrics["per_joint_mm"]) == set(lift_data.LIFT_JOINTS)
    assert 0 < metrics["pa_mpjpe_mm"] < metrics["mpjpe_mm"] < 1000
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_report_schedule_is_a_named_config_stepped_every_iteration():
    """``--named report``: batch 32, Adam lr 0.1 with betas (0.5, 0.999), StepLR(200, 0.3) per optimiser
    step, 5 epochs; the rate after 400 steps is 0.1 * 0.3^2."""
    from training import tasks  # noqa: F401 - registers the built-in models
    from training.train import get_task, resolve_configs

    task = get_task("lift")
    cfg, tcfg = resolve_configs(task, None, "report", ["hidden=16"])
    assert (cfg.batch_size, cfg.lr, cfg.beta1, cfg.beta2, tcfg.max_epochs) == (32, 0.1, 0.5, 0.999, 5)
    opt_cfg = lift_task.LiftModule(cfg).configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]
    assert sched["interval"] == "step" and opt.param_groups[0]["betas"] == (0.5, 0.999)
    for _ in range(400):
        opt.step()
        sched["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.3**2)
    default = lift_task.LiftModule(lift_task.LiftTaskConfig(hidden=16)).configure_optimizers()
    assert default["lr_scheduler"]["interval"] == "epoch"
    with pytest.raises(ValueError, match="lr_step_interval"):
        lift_task.LiftModule(lift_task.LiftTaskConfig(hidden=16, lr_step_interval="batch")).configure_optimizers()
