"""The CNNs: embedding sizes, r3d_18 against torchvision's published layout, local pretrained checkpoints."""

import pytest
import torch

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.deep.nets import R3D18, build_net, load_pretrained

# torchvision's r3d_18 (VideoResNet, BasicStem, Conv3DSimple, layers [2, 2, 2, 2]) has 33,371,472 parameters
# with its 400-class Kinetics head (torchvision R3D_18_Weights.KINETICS400_V1 meta "num_params").
R3D18_KINETICS_PARAMS = 33_371_472


def _torchvision_r3d18_state(seed=0) -> dict[str, torch.Tensor]:
    """A Kinetics-style r3d_18 state dict written out from torchvision's module names, independently of nets.py."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def bn(prefix, c):
        state.update({f"{prefix}.weight": torch.rand(c, generator=g), f"{prefix}.bias": torch.rand(c, generator=g),
                      f"{prefix}.running_mean": torch.rand(c, generator=g),
                      f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                      f"{prefix}.num_batches_tracked": torch.tensor(7)})

    state["stem.0.weight"] = torch.randn(64, 3, 3, 7, 7, generator=g)
    bn("stem.1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            state[f"{p}.conv1.0.weight"] = torch.randn(planes, inplanes, 3, 3, 3, generator=g)
            bn(f"{p}.conv1.1", planes)
            state[f"{p}.conv2.0.weight"] = torch.randn(planes, planes, 3, 3, 3, generator=g)
            bn(f"{p}.conv2.1", planes)
            if block == 0 and layer > 1:
                state[f"{p}.downsample.0.weight"] = torch.randn(planes, inplanes, 1, 1, 1, generator=g)
                bn(f"{p}.downsample.1", planes)
            inplanes = planes
    state["fc.weight"] = torch.randn(400, 512, generator=g)
    state["fc.bias"] = torch.randn(400, generator=g)
    return state


@pytest.fixture(scope="module")
def kinetics_state():
    return _torchvision_r3d18_state()


def test_reference_r3d18_state_has_torchvisions_parameter_count(kinetics_state):
    # guards the hand-written reference itself against the published figure (buffers are not parameters)
    state = kinetics_state
    n = sum(v.numel() for k, v in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == R3D18_KINETICS_PARAMS
    # our backbone has the same parameters minus the 400-class head, with a 1-channel stem (3x fewer stem weights)
    ours = sum(p.numel() for p in R3D18(in_channels=1).parameters())
    assert ours == R3D18_KINETICS_PARAMS - (400 * 512 + 400) - 64 * 2 * 3 * 7 * 7


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_kinetics_r3d18_checkpoint_loads_with_rgb_stem_summed(tmp_path, suffix, kinetics_state):
    state = kinetics_state
    path = tmp_path / f"r3d_18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    net = build_net("r3d_18", in_channels=2)
    assert load_pretrained(net, path) == len(state) - 2  # everything but fc.weight/fc.bias
    loaded = net.backbone.state_dict()
    torch.testing.assert_close(loaded["stem.0.weight"][:, 0], state["stem.0.weight"].sum(dim=1))
    assert torch.count_nonzero(loaded["stem.0.weight"][:, 1]) == 0  # the mask channel starts at zero
    torch.testing.assert_close(loaded["layer3.0.downsample.0.weight"], state["layer3.0.downsample.0.weight"])
    torch.testing.assert_close(loaded["layer4.1.conv2.1.running_var"], state["layer4.1.conv2.1.running_var"])
    # a grey 3-channel video gives the same stem response as the summed 1-channel stem
    x = torch.rand(1, 1, 4, 16, 16)
    grey = torch.nn.functional.conv3d(x.repeat(1, 3, 1, 1, 1), state["stem.0.weight"], stride=(1, 2, 2),
                                      padding=(1, 3, 3))
    ours = torch.nn.functional.conv3d(x, loaded["stem.0.weight"][:, :1], stride=(1, 2, 2), padding=(1, 3, 3))
    torch.testing.assert_close(grey, ours, rtol=1e-4, atol=1e-4)


def test_medicalnet_checkpoint_loads_into_monai_resnet10(tmp_path):
    # MedicalNet files: {"state_dict": {"module.conv1.weight": ..., ..., "module.conv_seg....": ...}}
    donor = build_net("resnet10", in_channels=1)
    for p in donor.parameters():
        torch.nn.init.normal_(p)
    state = {f"module.{k}": v for k, v in donor.backbone.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 512, 3, 3, 3)
    torch.save({"state_dict": state, "epoch": 200}, tmp_path / "resnet_10_23dataset.pth")
    net = build_net("resnet10", in_channels=1)
    assert load_pretrained(net, tmp_path / "resnet_10_23dataset.pth") == len(donor.backbone.state_dict())
    x = torch.rand(2, 1, 24, 24, 24)
    donor.eval(), net.eval()
    torch.testing.assert_close(net.features(x), donor.features(x))


def test_mismatched_checkpoint_says_how_many_tensors_matched(tmp_path):
    deeper = build_net("resnet18", in_channels=1)
    torch.save({f"module.{k}": v for k, v in deeper.backbone.state_dict().items()}, tmp_path / "r18.pth")
    with pytest.raises(InputError, match=r"r18.pth do not fit this ResNet backbone: \d+ of \d+ tensors matched"):
        load_pretrained(build_net("resnet10", in_channels=1), tmp_path / "r18.pth")
    with pytest.raises(InputError, match="not found"):
        load_pretrained(build_net("resnet10", in_channels=1), tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read pretrained weights"):
        load_pretrained(build_net("resnet10", in_channels=1), tmp_path / "junk.pth")


@pytest.mark.parametrize("arch, width, dim", [("resnet10", 0.25, 128), ("resnet18", 0.25, 128), ("resnet34", 0.25, 128),
                                              ("r3d_18", 1.0, 512)])
def test_features_and_head_shapes(arch, width, dim):
    net = build_net(arch, in_channels=2, width=width).eval()
    x = torch.rand(3, 2, 16, 16, 16)
    with torch.no_grad():
        emb = net.features(x)
        assert emb.shape == (3, dim)
        torch.testing.assert_close(net(x), net.head(emb).squeeze(1))


def test_e2e_fusion_adds_the_projected_standardised_radiomics():
    net = build_net("resnet10", in_channels=1, extra_dim=3, width=0.25).eval()
    extra = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    net.fusion.fit_standardiser(extra)
    torch.testing.assert_close(net.fusion.mean, torch.tensor([2.0, 20.0, 5.0]))
    torch.testing.assert_close(net.fusion.scale, torch.tensor([1.0, 10.0, 1.0]))  # constant column keeps 1
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        cnn = net.backbone(x)
        z = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]])  # standardised by hand
        expected = cnn + z @ net.fusion.linear.weight.T + net.fusion.linear.bias
        torch.testing.assert_close(net.features(x, extra), expected)
    with pytest.raises(InputError, match="pass `extra`"):
        net.features(x)
