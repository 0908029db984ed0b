"""Bad input gets a clear error."""

import copy

import pytest
import torch

import igdefense
from igdefense import IGDefense, zoo


@pytest.fixture(scope="module")
def defended(resnet18, resnet18_rankings):
    return IGDefense(resnet18, resnet18_rankings, k=50).eval()


@pytest.mark.parametrize("x, error, match", [
    (torch.rand(3, 32, 32), ValueError, "unsqueeze"),
    (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, "float"),
    (torch.full((2, 3, 32, 32), float("nan")), ValueError, "NaN"),
    (torch.rand(2, 3, 32, 32) * 255, ValueError, r"x / 255"),
    (torch.rand(2, 3, 32, 32) - 0.5, ValueError, "expects"),
])
def test_bad_images(defended, x, error, match):
    with pytest.raises(error, match=match):
        defended(x)


def test_bad_noise_shape(defended):
    with pytest.raises(ValueError, match="noise must have shape"):
        defended(torch.rand(2, 3, 32, 32), noise=torch.zeros(2, 2, 3, 32, 32))


def test_k_out_of_range(resnet18, resnet18_rankings):
    with pytest.raises(ValueError, match="between 1 and the number of neurons"):
        IGDefense(resnet18, resnet18_rankings, k=513)


def test_bad_hyperparameters(resnet18, resnet18_rankings):
    with pytest.raises(ValueError, match="n_samples"):
        IGDefense(resnet18, resnet18_rankings, n_samples=0)
    with pytest.raises(ValueError, match="tau"):
        IGDefense(resnet18, resnet18_rankings, tau=0)


def test_wrong_channel_count_names_the_expected_shape(defended):
    with pytest.raises(ValueError, match=r"1 channels.*\(batch, 3, 32, 32\).*expand"):
        defended(torch.rand(2, 1, 32, 32))


def test_a_size_the_model_cannot_take_says_what_it_expects(defended):
    with pytest.raises(ValueError, match=r"\(3, 32, 32\): resize"):
        defended(torch.rand(2, 3, 4, 4))  # ResNet-18's fixed 4x4 pooling fails on it


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_float_dtypes_run_in_the_models_dtype(defended, foolbox_images, dtype):
    x = foolbox_images[0][:4]
    noise = torch.randn(1, *x.shape, generator=torch.Generator().manual_seed(0)) * 4 / 255
    with torch.no_grad():
        got = defended(x.to(dtype), noise=noise.to(dtype))
        expected = defended(x.to(dtype).float(), noise=noise.to(dtype).float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_float64_model_is_wrapped_and_runs_in_float64(robust_cnn, foolbox_images):
    """The rankings' probe image is made in the model's dtype (it was float32: a conv error inside wrap)."""
    x = foolbox_images[0][:4]
    defended = igdefense.wrap(copy.deepcopy(robust_cnn).double(), zoo.rankings("smallcnn-robust"), seed=0)
    single = igdefense.wrap(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0)
    noise = torch.randn(1, *x.shape, generator=torch.Generator().manual_seed(0)) * 4 / 255
    with torch.no_grad():
        got = defended(x, noise=noise)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got.float(), single(x, noise=noise), rtol=1e-4, atol=1e-4)


def test_empty_batch_gives_empty_logits(defended, robust_cnn):
    empty = torch.rand(0, 3, 32, 32)
    with torch.no_grad():
        assert defended(empty).shape == (0, 10)  # this ResNet-18 itself fails on an empty batch
        defended_cnn = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"))
        assert defended_cnn(empty).shape == robust_cnn(empty).shape == (0, 10)


def test_an_evaluation_refuses_a_model_in_train_mode_and_leaves_it_as_it_was(robust_cnn, test_batch):
    """In train mode batch norm would score with batch statistics and the attacks would overwrite its running ones."""
    from igdefense.eval import evaluate

    model = copy.deepcopy(robust_cnn).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"in train mode .*call model.eval\(\)"):
        evaluate(model, test_batch, attacks=["fgsm"], progress=False)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_no_images_is_an_error_not_nan(robust_cnn, test_batch):
    from igdefense.eval import evaluate

    x, y = test_batch
    with pytest.raises(ValueError, match="batch 0 holds no images"):
        evaluate(robust_cnn, (x[:0], y[:0]), attacks=[], progress=False)
    with pytest.raises(ValueError, match="data holds no batches"):
        evaluate(robust_cnn, [], attacks=[], progress=False)


def test_train_mode_is_an_error_that_says_to_call_eval(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:2]
    defended = IGDefense(resnet18, resnet18_rankings, k=50)  # the model is in eval mode: runs
    defended(x)
    try:
        defended.train()
        with pytest.raises(RuntimeError, match=r"eval mode only, but the model is in train mode.*\.eval\(\)"):
            defended(x)
        defended.eval()
        resnet18.layer1[0].bn1.train()  # a module of the user's model put back in train mode
        with pytest.raises(RuntimeError, match="'layer1.0.bn1' is in train mode"):
            defended(x)
    finally:
        resnet18.eval()


@pytest.fixture(scope="module")
def batch(foolbox_images):
    return foolbox_images[0][:4], foolbox_images[1][:4]


@pytest.mark.parametrize("labels, error, match", [
    (torch.tensor([0, 1, 10, 2]), ValueError, r"\[0, 10\] but the model has 10 classes"),
    (torch.tensor([0, -1, 3, 2]), ValueError, "must be in"),
    (torch.tensor([0, 1, 2]), ValueError, "3 labels for 4 images"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer"),
    (torch.eye(10)[:4].long(), TypeError, "one-hot"),
])
def test_evaluate_bad_labels(resnet18, batch, labels, error, match):
    from igdefense import evaluate

    with pytest.raises(error, match=match):
        evaluate(resnet18, (batch[0], labels), attacks=["apgd-ce"], progress=False)


def test_evaluate_images_outside_the_unit_box(resnet18, batch):
    from igdefense import evaluate

    with pytest.raises(ValueError, match="x / 255"):
        evaluate(resnet18, (batch[0] * 255, batch[1]), attacks=[], progress=False)
