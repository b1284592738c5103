import numpy as np
import pytest
import torch
from PIL import Image

from deepart.core.config import group_options
from deepart.models import DeepArtNet, build_model
from deepart.objectives.losses import FocalLoss
from tests.conftest import TINY, TINY_SEQUENCER, compose_config, tiny_sequencer

TASKS = {"style": [f"s{i}" for i in range(5)], "genre": ["g0", "g1", "g2"], "artist": [f"a{i}" for i in range(7)]}


def tiny_model(sequencer: str, *extra: str) -> DeepArtNet:
    texture = ["texture=meanstd"] if sequencer == "none" and not any(e.startswith("texture") for e in extra) else []
    return build_model(compose_config([*TINY, f"sequencer={sequencer}", *tiny_sequencer(sequencer), *texture,
                                       *extra]), TASKS)


@pytest.mark.parametrize("sequencer", group_options("sequencer"))
def test_shapes_for_every_sequencer(sequencer):
    model = tiny_model(sequencer).eval()
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    out = model(images)
    assert {t: v.shape for t, v in out["logits"].items()} == {t: (2, len(c)) for t, c in TASKS.items()}
    if sequencer in ("pool", "none"):  # no attention weights (none: the heads read texture statistics alone)
        assert out["attention"] is None
    else:
        assert out["attention"].shape == (2, 3, 3)  # 96 px / stride 32
        assert torch.allclose(out["attention"].sum((1, 2)), torch.ones(2), atol=1e-5)


def test_reference_grid_is_7x7_at_224():
    model = tiny_model("bilstm").eval()
    out = model(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert out["attention"].shape == (1, 7, 7)


@pytest.mark.parametrize("sequencer", group_options("sequencer"))
def test_every_trainable_parameter_gets_a_gradient(sequencer):
    torch.manual_seed(0)
    model = tiny_model(sequencer).train()
    loss_fn = FocalLoss(TASKS, weighting="uncertainty")
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    labels = torch.tensor([[0, 1, -1], [1, 2, 3], [2, -1, 4], [4, 0, 6]])
    total, _, _ = loss_fn(model(images)["logits"], labels)
    total.backward()
    no_grad = [n for n, p in [*model.named_parameters(), *loss_fn.named_parameters()]
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_uint8_and_float_inputs_agree():
    model = tiny_model("bilstm").eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    a = model(images)["logits"]["style"]
    b = model(images.float() / 255)["logits"]["style"]
    assert torch.allclose(a, b, atol=1e-5)


def test_a_class_without_the_encoder_contract_is_refused_by_key():
    from deepart.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sequencer\.encoder\._target_=torch\.nn\.Identity: not an nn\.Module with "
                                          r"what deepart\.models\.encoders\.Encoder lists"):
        tiny_model("bilstm", "sequencer.encoder={_target_: torch.nn.Identity}")


def test_unknown_backbone_is_a_clear_config_error():
    from deepart.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not_a_model.*not a timm model"):
        tiny_model("bilstm", "backbone.name=not_a_model")


def test_predict_api(tmp_path):
    from deepart import Predictor
    from deepart.core.checkpoint import Checkpoint
    from deepart.core.config import to_plain

    cfg = compose_config([*TINY, *TINY_SEQUENCER])
    model = build_model(cfg, TASKS)
    Checkpoint(model=model.state_dict(), config=to_plain(cfg), tasks=TASKS, phase={"name": "3", "index": 0},
               progress={"epoch": 1}).save(tmp_path / "m.pt")
    loaded = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    pred = loaded.predict(image)
    for task, classes in TASKS.items():
        p = pred[task]
        assert p["label"] in classes and p["label"] == p["top_k"][0][0]
        assert len(p["top_k"]) == min(5, len(classes))
        probs = [q for _, q in p["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < p["confidence"] <= 1
    assert pred["attention"].shape == (2, 2)  # 64 px crop / 32
    assert np.isclose(pred["attention"].sum(), 1, atol=1e-5)
    # same weights -> same logits as the original model on the same preprocessed input
    both = loaded.predict([image, image.convert("L")])
    assert len(both) == 2 and both[0]["style"]["confidence"] == pytest.approx(pred["style"]["confidence"], abs=1e-6)
