"""The gpu preset's architectures through the chapters' experiments, on tiny stand-in data, on the CPU.

The gpu preset had never run before a GPU did (issue 18), and its first run failed in
ways the CPU would have shown: the paper's MLP has BatchNorm, whose integer buffer
``num_batches_tracked`` cannot be differentiated. Each test takes the gpu preset's
architecture for a chapter and calls the package functions that chapter calls, with a
few examples and steps instead of MNIST and CIFAR-10 (stand-in files in the real formats,
read by the real loaders). Seconds each; on ``SGDLAB_TEST_DEVICE`` like every unit test.
"""

import pytest
import torch

import sgdlab
from sgdlab import standin
from sgdlab.hessian import alignment
from sgdlab.recorders import TopEigenvalueRecorder
from sgdlab.stability import StabilityRecorder

GPU = sgdlab.get_preset("gpu")


@pytest.fixture(scope="module")
def standin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    standin.write_standins(root, sizes={"mnist": (64, 32), "cifar10": (48, 24)})
    return root


@pytest.fixture(scope="module")
def mnist(standin_root, device):
    return sgdlab.load_dataset(GPU.mlp_dataset, root=standin_root, device=device)


@pytest.fixture(scope="module")
def cifar(standin_root, device):
    return sgdlab.load_dataset(GPU.cnn_dataset, root=standin_root, device=device)


@pytest.fixture(autouse=True)
def _forget_standins():
    yield
    standin.loaded.clear()  # other tests' scoreboard records must not see these stand-ins


def test_the_gpu_preset_uses_the_architectures_smoked_here():
    assert (GPU.mlp_arch, GPU.cnn_arch, GPU.curvature.arch, GPU.stability.cnn_arch) == (
        "mlp-paper", "vgg11", "vgg11", "resnet18")


def test_per_example_gradients_of_the_paper_mlp_with_batchnorm(mnist):
    # sgd_vs_gd: vmap(grad) over functional_call; BatchNorm's integer buffer held constant
    model = sgdlab.make_model(GPU.mlp_arch, mnist, seed=0)
    sgdlab.train(model, mnist, lr=0.1, batch_size=16, steps=2, progress=False, evaluate=False)
    params = sgdlab.model_params(model)
    rows = sgdlab.per_example_gradients(model, params, mnist.x_train[:10], mnist.y_train[:10], chunk_size=4)
    assert rows.shape == (10, sgdlab.num_parameters(sgdlab.model_params(model, buffers=False)))
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(mnist.x_train[:10]), mnist.y_train[:10])
    full = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    torch.testing.assert_close(rows.mean(0), full, rtol=1e-4, atol=1e-6)


def test_walk_of_the_paper_mlp_and_vgg11(mnist, cifar):
    for data, arch in ((mnist, GPU.mlp_arch), (cifar, GPU.cnn_arch)):
        model = sgdlab.make_model(arch, data, seed=0)
        _, walk = sgdlab.record_walk(model, data, epochs=(1,), lr=0.1, batch_size=16, steps=2, eval_examples=8,
                                     weight_decay=GPU.walk.weight_decay, seed=0, progress=False)
        assert len(walk.census()) == 1 and sum(len(c) for c in walk.curves) == 2


@pytest.mark.filterwarnings("ignore:Lanczos did not converge")  # 3 products: a smoke test, not a measurement
def test_curvature_of_vgg11(cifar):
    model = sgdlab.make_model(GPU.curvature.arch, cifar, seed=0)
    hx, hy = cifar.x_train[:8], cifar.y_train[:8]
    sharpness = TopEigenvalueRecorder(every=2, x=hx, y=hy, max_iter=3)
    sgdlab.train(model, cifar, lr=GPU.curvature.lr, batch_size=16, steps=2, seed=0, progress=False,
                 evaluate=False, callbacks=[sharpness])
    assert len(sharpness.values) == 2 and all(torch.isfinite(torch.as_tensor(sharpness.values)))
    values = alignment(model, sgdlab.model_params(model), cifar.x_train, cifar.y_train, 8, 2, hessian_x=hx, hessian_y=hy)
    assert values.shape == (2,) and torch.isfinite(values).all()


def test_seeds_of_the_paper_mlp(mnist):
    result = sgdlab.train_seeds(GPU.mlp_arch, mnist, range(2), lr=0.1, batch_size=32, epochs=1)
    assert len(result.histories) == 2


def test_stability_of_resnet18_and_the_paper_mlp(mnist, cifar):
    for data, arch in ((cifar, GPU.stability.cnn_arch), (mnist, GPU.mlp_arch)):
        recorder = StabilityRecorder(8)
        sgdlab.train(sgdlab.make_model(arch, data, seed=0), data, lr=0.1, batch_size=16, steps=2,
                     schedule="cosine", seed=0, callbacks=[recorder], progress=False, evaluate=False)
        assert recorder.result is not None


def test_trajectory_matching_of_the_paper_mlp(mnist):
    models = [sgdlab.make_model(GPU.mlp_arch, mnist, seed=s) for s in (0, 1)]
    for s, model in enumerate(models):
        sgdlab.train(model, mnist, lr=0.05, batch_size=16, steps=2, seed=s, progress=False, evaluate=False)
    w_a, w_b = (sgdlab.model_params(m) for m in models)
    spec = sgdlab.permutation_spec(models[0])
    aligned = sgdlab.apply_permutation(spec, sgdlab.weight_matching(spec, w_a, w_b), w_b)
    assert sgdlab.distance(w_a, aligned) <= sgdlab.distance(w_a, w_b) + 1e-4
    barrier = sgdlab.lmc_barrier(models[0], w_a, aligned, mnist.x_train[:16], mnist.y_train[:16])
    assert barrier is not None


def test_resnet20_trains_on_the_cifar_standin(cifar):
    model = sgdlab.make_model("resnet20", cifar, seed=0)
    history = sgdlab.train(model, cifar, lr=0.1, batch_size=16, steps=2, seed=0, progress=False)
    assert len(history.train_loss) == 1
