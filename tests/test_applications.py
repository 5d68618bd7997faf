"""Chapter 5's library parts: anomaly scores and AUROC, corruptions, filters and PSNR/SSIM, binary codes and their
retrieval measures, and the feature classifiers. Small synthetic data; one freshly built tiny model, never trained."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.decomposition import PCA

from saae_lib import anomaly, denoising, features, retrieval
from saae_lib.data import MNIST, labeled_subset
from saae_lib.models import AdversarialAutoencoder, Autoencoder
from saae_lib.priors import MixtureOfGaussiansPrior, SwissRollPrior


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def prototype_mnist(per_digit=(30, 5, 20), noise=0.05, seed=0) -> MNIST:
    """A fake MNIST: each digit is one random prototype image plus a little noise, so digits are easy to tell apart."""
    g = generator(seed)
    prototypes = torch.rand(10, 784, generator=g).round()  # 10, 784

    def split(n):
        labels = torch.arange(10).repeat_interleave(n)
        images = (prototypes[labels] + noise * torch.randn(len(labels), 784, generator=g)).clamp(0, 1)
        return images, labels

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (split(n) for n in per_digit)
    return MNIST(train_x, train_y, val_x, val_y, test_x, test_y, device=torch.device("cpu"))


def model_with_constant_code(model, code):
    """The model's encoder made to map every image to `code` (last layer: zero weights, bias = code)."""
    last = model.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(code, dtype=torch.float32))
    return model


# -- anomaly -----------------------------------------------------------------------------------------------------
def test_auroc_of_perfect_reversed_and_tied_scores():
    is_anomaly = np.array([False, False, True, True, True])
    scores = np.array([0.1, 0.2, 0.5, 0.7, 0.9])
    assert anomaly.auroc(scores, is_anomaly) == 1.0
    assert anomaly.auroc(-scores, is_anomaly) == 0.0
    assert anomaly.auroc(np.ones(5), is_anomaly) == 0.5
    assert anomaly.auroc(torch.tensor(scores), torch.tensor(is_anomaly)) == 1.0  # tensors too


def test_auroc_refuses_one_class_and_bad_scores():
    with pytest.raises(ValueError, match="both normal images and anomalies"):
        anomaly.auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="one score per image"):
        anomaly.auroc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="NaN or infinite"):
        anomaly.auroc([0.1, float("nan")], [True, False])


def test_one_class_split_trains_on_the_normal_digit_and_flags_the_others():
    data = prototype_mnist()
    split = anomaly.one_class_split(data, 3)
    assert len(split.train_images) == 30 and len(split.val_images) == 5
    assert torch.equal(split.train_images, data.train_images[data.train_labels == 3])
    assert torch.equal(split.images, data.test_images)  # every test image is scored
    assert torch.equal(split.is_anomaly, data.test_labels != 3)
    assert int(split.is_anomaly.sum()) == 9 * 20
    with pytest.raises(ValueError, match="digit must be in 0..9"):
        anomaly.one_class_split(data, 10)


def test_one_class_split_on_real_mnist(tiny_mnist):
    split = anomaly.one_class_split(tiny_mnist, 7)
    assert len(split.train_images) == int((tiny_mnist.train_labels == 7).sum()) > 0
    assert set(split.labels[split.is_anomaly].tolist()) == set(range(10)) - {7}
    assert set(split.labels[~split.is_anomaly].tolist()) == {7}


def subspace_data(seed=0):
    """Inliers on a 3-D plane in 784-D space (plus tiny noise) and one outlier off it, at the inliers' own scale."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((784, 3)))[0].T  # 3, 784 orthonormal rows
    inliers = 0.5 + rng.standard_normal((200, 3)) @ basis * 0.1 + 0.001 * rng.standard_normal((200, 784))
    tests = 0.5 + rng.standard_normal((20, 3)) @ basis * 0.1  # on the plane
    off_plane = rng.standard_normal(784)
    off_plane -= basis.T @ (basis @ off_plane)  # orthogonal to the plane
    outlier = 0.5 + 0.3 * off_plane / np.linalg.norm(off_plane)
    return inliers[:150], np.vstack([tests, outlier]), np.arange(21) == 20


def test_pca_and_nearest_neighbour_scores_rank_an_outlier_first():
    train, images, is_outlier = subspace_data()
    pca_scores = anomaly.pca_reconstruction_score(train, images, n_components=3)
    nn_scores = anomaly.nearest_neighbour_score(train, images)
    assert pca_scores.shape == nn_scores.shape == (21,)
    assert pca_scores.argmax() == 20 and nn_scores.argmax() == 20
    assert anomaly.auroc(pca_scores, is_outlier) == anomaly.auroc(nn_scores, is_outlier) == 1.0
    as_images = torch.tensor(images).reshape(21, 1, 28, 28)  # any MNIST image shape, tensors too
    np.testing.assert_allclose(anomaly.pca_reconstruction_score(train, as_images, 3), pca_scores, rtol=1e-5)


def test_nearest_neighbour_score_is_the_exact_distance_in_any_batch_size():
    rng = np.random.default_rng(1)
    train, images = rng.random((50, 784)), rng.random((23, 784))
    exact = np.sqrt(((images[:, None] - train[None]) ** 2).sum(-1)).min(1)
    for batch_size in (None, 1, 7):
        np.testing.assert_allclose(anomaly.nearest_neighbour_score(train, images, batch_size), exact, rtol=1e-4)
    np.testing.assert_allclose(anomaly.nearest_neighbour_score(train, train[:5]), 0, atol=1e-2)  # itself: 0


def test_pca_reconstruction_score_is_scikit_learns_residual():
    rng = np.random.default_rng(2)
    train, images = rng.random((40, 784)), rng.random((10, 784))
    pca = PCA(n_components=5, svd_solver="full").fit(train)
    expected = ((images - pca.inverse_transform(pca.transform(images))) ** 2).mean(1)
    np.testing.assert_allclose(anomaly.pca_reconstruction_score(train, images, 5), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="n_components must be between"):
        anomaly.pca_reconstruction_score(train, images, 0)


def test_reconstruction_score_is_per_image_mse():
    torch.manual_seed(0)
    model = Autoencoder(latent_dim=2, hidden=(32, 32))
    images = torch.rand(6, 784, generator=generator())
    with torch.no_grad():
        expected = (model.reconstruct(images) - images).pow(2).mean(1)
    np.testing.assert_allclose(anomaly.reconstruction_score(model, images), expected.numpy(), rtol=1e-5)
    assert model.training  # the model's mode is restored


def test_prior_score_is_lower_near_the_gaussian_priors_mode():
    torch.manual_seed(0)
    images = torch.rand(4, 784, generator=generator())
    near = model_with_constant_code(AdversarialAutoencoder(latent_dim=2, hidden=(32, 32)), [0.1, -0.1])
    far = model_with_constant_code(AdversarialAutoencoder(latent_dim=2, hidden=(32, 32)), [3.0, 2.0])
    assert (anomaly.prior_score(near, images) < anomaly.prior_score(far, images)).all()
    # For N(0, I): -log p(z) = ||z||^2 / 2 + log(2 pi) in 2-D.
    np.testing.assert_allclose(anomaly.prior_score(far, images), (9 + 4) / 2 + np.log(2 * np.pi), rtol=1e-6)


def test_typicality_scores_the_mode_as_untypical_and_the_shell_as_typical():
    """For N(0, I) in d dimensions, -log p(z) - E[-log p] = (||z||^2 - d) / 2: 0 on the shell ||z||^2 = d, d / 2 at
    the mode (the prior score calls the mode the most normal code of all)."""
    images = torch.rand(4, 784, generator=generator())
    at_mode = model_with_constant_code(AdversarialAutoencoder(latent_dim=2, hidden=(32, 32)), [0.0, 0.0])
    on_shell = model_with_constant_code(AdversarialAutoencoder(latent_dim=2, hidden=(32, 32)), [1.0, 1.0])
    far = model_with_constant_code(AdversarialAutoencoder(latent_dim=2, hidden=(32, 32)), [3.0, 2.0])
    np.testing.assert_allclose(anomaly.typicality_score(at_mode, images), 1.0, atol=0.03)  # the mean of 10k samples
    np.testing.assert_allclose(anomaly.typicality_score(on_shell, images), 0.0, atol=0.03)
    np.testing.assert_allclose(anomaly.typicality_score(far, images), (13 - 2) / 2, atol=0.03)
    assert (anomaly.prior_score(at_mode, images) < anomaly.prior_score(on_shell, images)).all()


def test_prior_score_uses_the_priors_own_density():
    torch.manual_seed(0)
    images = torch.rand(3, 784, generator=generator())

    def mixture_model(code):
        model = AdversarialAutoencoder(latent_dim=2, hidden=(32, 32), prior=MixtureOfGaussiansPrior())
        return model_with_constant_code(model, code)

    # The mixture's petals sit at radius 2: its first component's centre is likely, the origin is not (a Gaussian
    # prior would say the opposite).
    on_petal = anomaly.prior_score(mixture_model([2.0, 0.0]), images)
    at_origin = anomaly.prior_score(mixture_model([0.0, 0.0]), images)
    assert (on_petal < at_origin).all()
    swiss = AdversarialAutoencoder(latent_dim=2, hidden=(32, 32), prior=SwissRollPrior())
    with pytest.raises(ValueError, match="no closed-form density"):
        anomaly.prior_score(swiss, images)


def test_combined_score_is_the_sum_of_scores_standardised_on_the_normal_images():
    torch.manual_seed(0)
    model = AdversarialAutoencoder(latent_dim=2, hidden=(32, 32))
    train, images = torch.rand(20, 784, generator=generator(1)), torch.rand(5, 784, generator=generator(2))
    rec, rec_train = anomaly.reconstruction_score(model, images), anomaly.reconstruction_score(model, train)
    typ, typ_train = anomaly.typicality_score(model, images), anomaly.typicality_score(model, train)
    expected = (rec - rec_train.mean()) / rec_train.std() + (typ - typ_train.mean()) / typ_train.std()
    np.testing.assert_allclose(anomaly.combined_score(model, images, train), expected, rtol=1e-6)
    standardised = anomaly.combined_score(model, train, train)
    assert abs(standardised.mean()) < 1e-6  # each part has mean 0 on the reference images


def test_per_digit_auroc_runs_the_protocol_for_each_digit():
    data = prototype_mnist()
    seen = []

    def score(split):
        seen.append(split.digit)
        return anomaly.nearest_neighbour_score(split.train_images, split.images)

    per_digit, mean = anomaly.per_digit_auroc(score, data)
    assert seen == list(range(10)) and sorted(per_digit) == list(range(10))
    assert all(value == 1.0 for value in per_digit.values()) and mean == 1.0  # the prototypes are far apart
    per_digit, mean = anomaly.per_digit_auroc(lambda split: -score(split), data, digits=(0, 1))
    assert per_digit == {0: 0.0, 1: 0.0} and mean == 0.0


# -- denoising ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, level", [("gaussian", 0.5), ("salt_and_pepper", 0.2), ("masked_block", 8)])
def test_corruptions_are_reproducible_and_differ_with_the_seed(kind, level):
    images = torch.rand(5, 784, generator=generator(9)) * 0.8 + 0.1
    first = denoising.corrupt(images, kind, level, generator(0))
    assert torch.equal(first, denoising.corrupt(images, kind, level, generator(0)))
    assert not torch.equal(first, denoising.corrupt(images, kind, level, generator(1)))
    assert not torch.equal(first, images) and first.shape == images.shape
    assert first.min() >= 0 and first.max() <= 1
    square = images.reshape(5, 28, 28)
    assert denoising.corrupt(square, kind, level, generator(0)).shape == (5, 28, 28)  # the input's shape


def test_gaussian_noise_is_clipped_and_has_the_requested_spread():
    middle = torch.full((200, 784), 0.5)
    noisy = denoising.gaussian_noise(middle, 0.1, generator())
    assert abs(float((noisy - middle).std()) - 0.1) < 0.002  # almost nothing clipped at 5 standard deviations
    clipped = denoising.gaussian_noise(middle, 2.0, generator())
    assert clipped.min() == 0 and clipped.max() == 1
    with pytest.raises(ValueError, match="std must be >= 0"):
        denoising.gaussian_noise(middle, -1, generator())


def test_salt_and_pepper_corrupts_the_requested_fraction():
    gray = torch.full((10, 784), 0.5)  # every salt or pepper pixel changes it
    noisy = denoising.salt_and_pepper(gray, 0.25, generator())
    changed = noisy != 0.5
    assert (changed.sum(1) == 196).all()  # round(0.25 * 784) in every image
    assert set(noisy[changed].unique().tolist()) == {0.0, 1.0}
    assert 0.4 < float(noisy[changed].mean()) < 0.6  # salt and pepper about equally often
    with pytest.raises(ValueError, match="fraction must be in"):
        denoising.salt_and_pepper(gray, 1.5, generator())


def test_masked_block_zeroes_one_square_per_image():
    white = torch.ones(50, 784)
    masked = denoising.masked_block(white, 7, generator()).reshape(50, 28, 28)
    for image in masked:
        rows, columns = torch.nonzero(image == 0, as_tuple=True)
        assert len(rows) == 49
        assert int(rows.max() - rows.min()) == 6 and int(columns.max() - columns.min()) == 6  # one 7 x 7 square
    corners = {tuple(torch.nonzero(image == 0)[0].tolist()) for image in masked}
    assert len(corners) > 10  # placed independently per image
    assert denoising.masked_block(white, 28, generator()).max() == 0
    with pytest.raises(ValueError, match="pixels must be in"):
        denoising.masked_block(white * 255, 7, generator())


def test_median_filter_removes_isolated_salt_noise_per_image():
    black = torch.zeros(3, 784)
    salted = black.clone().reshape(3, 28, 28)
    salted[0, 5, 5] = salted[0, 20, 13] = salted[1, 0, 0] = 1.0  # isolated white pixels (one in a corner)
    filtered = denoising.median_filter(salted.reshape(3, 784), size=3)
    assert filtered.shape == (3, 784) and filtered.dtype == torch.float32
    assert filtered.max() == 0
    np_filtered = denoising.median_filter(salted.numpy(), size=3)
    assert isinstance(np_filtered, np.ndarray) and np_filtered.shape == (3, 28, 28)


def test_gaussian_filter_does_not_blur_across_the_batch():
    images = torch.zeros(3, 28, 28)
    images[1, 14, 14] = 1.0
    blurred = denoising.gaussian_filter(images, sigma=1.0)
    assert blurred[0].max() == 0 and blurred[2].max() == 0  # the neighbours of image 1 stay black
    assert abs(float(blurred[1].sum()) - 1.0) < 1e-4 and 0 < float(blurred[1, 14, 14]) < 1  # mass spread, kept
    assert float(blurred[1, 14, 15]) == pytest.approx(float(blurred[1, 15, 14]))  # isotropic


def test_psnr_per_image_is_scikit_images_and_the_sets_psnr_is_that_of_all_pixels():
    clean = torch.rand(8, 784, generator=generator(3))
    noisy = denoising.gaussian_noise(clean, 0.3, generator(4))
    per_image = [peak_signal_noise_ratio(c, n, data_range=1.0)
                 for c, n in zip(clean.double().numpy(), noisy.double().numpy(), strict=True)]
    np.testing.assert_allclose(denoising.psnr_per_image(clean, noisy), per_image, rtol=1e-9)
    whole = peak_signal_noise_ratio(clean.double().numpy(), noisy.double().numpy(), data_range=1.0)
    assert denoising.psnr(clean, noisy) == pytest.approx(whole, rel=1e-9)  # the set as one image
    assert denoising.psnr_per_image(clean, clean).tolist() == [np.inf] * 8
    one_exact = noisy.clone()
    one_exact[0] = clean[0]
    assert np.isfinite(denoising.psnr(clean, one_exact)) and denoising.psnr(clean, clean) == np.inf


def test_ssim_is_scikit_images_mean_and_one_for_identical_images():
    clean = torch.rand(4, 784, generator=generator(5))
    noisy = denoising.gaussian_noise(clean, 0.3, generator(6))
    expected = np.mean([structural_similarity(c, n, data_range=1.0) for c, n in
                        zip(clean.double().numpy().reshape(4, 28, 28), noisy.double().numpy().reshape(4, 28, 28),
                            strict=True)])
    assert denoising.ssim(clean, noisy) == pytest.approx(expected, rel=1e-9)
    assert denoising.ssim(clean, clean) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in number"):
        denoising.ssim(clean, noisy[:3])


def test_ssim_per_image_is_scikit_images_on_digits_and_restorations_of_them():
    rng = np.random.default_rng(7)
    clean = np.zeros((300, 28, 28))
    clean[:, 6:22, 8:20] = rng.random((300, 16, 12)) ** 3  # dark borders, bright strokes: flat windows and edges
    restored = {"noisy": np.clip(clean + 0.4 * rng.standard_normal(clean.shape), 0, 1),
                "dimmed": 0.5 * clean, "blank": np.zeros_like(clean), "same": clean.copy(),
                "filtered": denoising.median_filter(clean, 3)}
    for name, images in restored.items():  # 300 images: more than one chunk
        expected = [structural_similarity(c, r, data_range=1.0) for c, r in zip(clean, images, strict=True)]
        np.testing.assert_allclose(denoising.ssim_per_image(clean, images), expected, rtol=0, atol=1e-12,
                                   err_msg=name)


# -- retrieval ---------------------------------------------------------------------------------------------------
def naive_hamming(a, b):
    return np.array([[sum(x != y for x, y in zip(row, other, strict=True)) for other in b] for row in a])


@pytest.mark.parametrize("n_bits", [1, 13, 16, 32, 64, 70])
def test_hamming_distances_equal_a_naive_count(n_bits):
    rng = np.random.default_rng(n_bits)
    queries, database = rng.random((7, n_bits)) > 0.5, rng.random((11, n_bits)) > 0.5
    expected = naive_hamming(queries, database)
    assert np.array_equal(retrieval.hamming_distances(queries, database), expected)
    assert np.array_equal(retrieval.hamming_distances(queries, database, table=True), expected)  # numpy < 2's way
    packed = retrieval.hamming_distances(retrieval.pack_bits(queries), retrieval.pack_bits(database), packed=True)
    assert np.array_equal(packed, expected)


def test_hamming_distances_in_blocks(monkeypatch):
    monkeypatch.setattr(retrieval, "BLOCK", 5)  # one query per block
    rng = np.random.default_rng(0)
    queries, database = rng.random((4, 20)) > 0.5, rng.random((9, 20)) > 0.5
    assert np.array_equal(retrieval.hamming_distances(queries, database), naive_hamming(queries, database))


def test_sign_codes_and_pack_bits():
    codes = torch.tensor([[0.5, -1.0, 2.0], [-0.1, 0.0, 0.3]])
    bits = retrieval.sign_codes(codes)
    assert bits.dtype == bool and bits.tolist() == [[True, False, True], [False, False, True]]
    assert retrieval.sign_codes(codes, threshold=[0.6, -2, 0]).tolist() == [[False, True, True], [False, True, True]]
    assert retrieval.pack_bits(bits).tolist() == [[0b10100000], [0b00100000]]
    with pytest.raises(ValueError, match="array of bits"):
        retrieval.pack_bits(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="3 bits but the database 2"):
        retrieval.hamming_distances(bits, bits[:, :2])


def test_map_is_one_for_a_code_that_is_the_label():
    labels = np.arange(10).repeat(5)
    bits = np.unpackbits(labels.astype(np.uint8)[:, None], axis=1)[:, 4:].astype(bool)  # 4 bits: the label itself
    assert retrieval.mean_average_precision(bits, labels, bits, labels) == 1.0
    assert retrieval.mean_average_precision(bits, labels, bits, labels, top_k=3) == 1.0
    assert retrieval.precision_at_k(bits, labels, bits, labels, k=5) == 1.0


def test_map_and_precision_match_a_hand_computed_example():
    # One query 000; database distances 1, 0, 2, 1, 0 -> ranked (ties by index) 1, 4, 0, 3, 2.
    query = np.zeros((1, 3), dtype=bool)
    database = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    database_labels = np.array([0, 1, 0, 1, 0])  # relevance in ranked order: 1:no, 4:yes, 0:yes, 3:no, 2:yes
    query_labels = np.array([0])
    ap = (1 / 2 + 2 / 3 + 3 / 5) / 3
    assert retrieval.mean_average_precision(query, query_labels, database, database_labels) == pytest.approx(ap)
    ap_at_3 = (1 / 2 + 2 / 3) / 2
    assert retrieval.mean_average_precision(query, query_labels, database, database_labels,
                                            top_k=3) == pytest.approx(ap_at_3)
    assert retrieval.precision_at_k(query, query_labels, database, database_labels, k=2) == 0.5
    assert retrieval.precision_at_k(query, query_labels, database, database_labels, k=3) == pytest.approx(2 / 3)
    assert retrieval.mean_average_precision(query, np.array([2]), database, database_labels) == 0.0  # none relevant


def test_map_is_the_same_in_any_batch_of_queries():
    rng = np.random.default_rng(0)
    queries, database = rng.random((30, 8)) > 0.5, rng.random((40, 8)) > 0.5
    query_labels, database_labels = rng.integers(3, size=30), rng.integers(3, size=40)
    whole = retrieval.mean_average_precision(queries, query_labels, database, database_labels)
    assert retrieval.mean_average_precision(queries, query_labels, database, database_labels,
                                            batch_size=7) == pytest.approx(whole)


def test_average_precisions_are_the_running_precision_at_each_relevant_rank():
    # The definition with running sums over whole lists, against the library's k / r at relevant ranks only.
    rng = np.random.default_rng(5)
    relevant = rng.random((50, 300)) < rng.random((50, 1)) * 0.3  # a different share per list
    relevant[3] = False  # a list with nothing relevant scores 0
    relevant[7] = True
    hits = relevant.cumsum(axis=1)
    found = hits[:, -1]
    expected = np.where(found > 0, (hits / np.arange(1, 301) * relevant).sum(axis=1) / np.maximum(found, 1), 0)
    np.testing.assert_allclose(retrieval.average_precisions(relevant), expected, rtol=1e-12)
    assert retrieval.average_precisions(relevant)[3] == 0 and retrieval.average_precisions(relevant)[7] == 1


def test_map_is_the_same_on_one_thread_or_several():
    rng = np.random.default_rng(6)
    database, queries = rng.random((500, 16)) > 0.5, rng.random((90, 16)) > 0.5
    database_labels, query_labels = rng.integers(0, 10, 500), rng.integers(0, 10, 90)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(retrieval.map_and_precision(queries, query_labels, database, database_labels, k=20,
                                                       batch_size=8))
    finally:
        torch.set_num_threads(threads)
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        retrieval.mean_average_precision(queries, query_labels, database, database_labels, batch_size=0)


def clustered(n_per_class=60, n_classes=4, dim=20, seed=0):
    """Gaussian clusters around random centres, with anisotropic noise (PCA's variances then differ a lot)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 3
    labels = np.arange(n_classes).repeat(n_per_class)
    scales = np.linspace(3, 0.1, dim)
    return centres[labels] + rng.standard_normal((len(labels), dim)) * scales, labels


def test_baseline_bits_have_the_requested_width_and_follow_the_seed():
    x, _ = clustered()
    for make in (retrieval.lsh_bits, retrieval.pca_bits, retrieval.itq_bits):
        bits = make(x, x[:10], 8)
        assert bits.shape == (10, 8) and bits.dtype == bool
        assert np.array_equal(bits, make(x, x[:10], 8))  # the same seed, the same bits
    assert not np.array_equal(retrieval.lsh_bits(x, x, 8, seed=0), retrieval.lsh_bits(x, x, 8, seed=1))
    with pytest.raises(ValueError, match="n_bits must be between"):
        retrieval.pca_bits(x, x, 21)


def test_itq_loss_does_not_increase_and_beats_plain_pca_signs():
    x, _ = clustered()
    itq = retrieval.fit_itq(x, 8, n_iterations=50, seed=0)
    losses = np.array(itq.losses)
    assert len(losses) == 50
    assert (np.diff(losses) <= 1e-9 * losses[0]).all()  # each step minimises over B or over R
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(itq.rotation.T @ itq.rotation, np.eye(8), atol=1e-10)
    # Plain PCA signs are ITQ with R = I. Nothing forces the rotation below that (it starts at random), but on this
    # anisotropic data it ends at 0.90-0.92 of PCA's loss for data seeds 0-5 and rotation seeds 0-2.
    projected = itq.pca.transform(x)
    pca_loss = ((retrieval.signs(projected) - projected) ** 2).sum()
    assert losses[-1] < 0.95 * pca_loss


def test_codes_of_clusters_retrieve_their_own_class():
    x, labels = clustered(seed=1)
    for bits in (retrieval.pca_bits(x, x, 8), retrieval.itq_bits(x, x, 8)):
        assert retrieval.mean_average_precision(bits, labels, bits, labels) > 0.5  # chance: 0.25


# -- features ----------------------------------------------------------------------------------------------------
def test_knn_and_linear_probe_are_perfect_on_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(5) * 10
    train_labels, test_labels = np.arange(5).repeat(20), np.arange(5).repeat(8)
    train = centres[train_labels] + rng.standard_normal((100, 5))
    test = centres[test_labels] + rng.standard_normal((40, 5))
    assert features.knn_accuracy(train, train_labels, test, test_labels) == 1.0
    assert features.knn_accuracy(torch.tensor(train), torch.tensor(train_labels), test, test_labels, k=5) == 1.0
    assert features.linear_probe_accuracy(train, train_labels, test, test_labels) == 1.0
    shuffled = rng.permutation(test_labels)
    assert features.knn_accuracy(train, train_labels, test, shuffled) < 0.6
    with pytest.raises(ValueError, match="k must be between"):
        features.knn_accuracy(train, train_labels, test, test_labels, k=0)
    with pytest.raises(ValueError, match="encode both with the same model"):
        features.knn_accuracy(train, train_labels, test[:, :3], test_labels)


def test_pca_codes_are_scikit_learns_projection():
    rng = np.random.default_rng(0)
    train, images = rng.random((60, 784)), rng.random((9, 784))
    codes = features.pca_codes(train, images, 4)
    assert codes.shape == (9, 4) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, PCA(4, svd_solver="full").fit(train).transform(images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(80, 30), (20, 30)])  # more points than dimensions, and fewer
def test_fitted_pca_is_scikit_learns_own_fit_for_every_n_components(shape):
    rng = np.random.default_rng(1)
    train, images = rng.random(shape), rng.random((7, shape[1]))
    for dtype in (np.float64, np.float32):
        for n in (1, 4, min(shape) - 1, min(shape)):
            own = PCA(n, svd_solver="full").fit(train.astype(dtype))
            cut = features.fitted_pca(train.astype(dtype), n)
            assert set(vars(cut)) == set(vars(own))
            for name, value in vars(own).items():  # every attribute, to the last bit
                assert np.array_equal(getattr(cut, name), value), f"{name} of PCA({n}) on {dtype.__name__} differs"
                assert np.asarray(getattr(cut, name)).dtype == np.asarray(value).dtype, name
            # Equal arrays at other addresses can take other BLAS paths: the projections agree to rounding.
            np.testing.assert_allclose(cut.transform(images.astype(dtype)), own.transform(images.astype(dtype)),
                                       rtol=0, atol=1e-12 if dtype == np.float64 else 1e-5)


def test_fitted_pca_remembers_a_fit_by_the_datas_bytes(monkeypatch):
    rng = np.random.default_rng(1)
    train = rng.random((80, 30))
    monkeypatch.setattr(features, "PCA_FITS", type(features.PCA_FITS)())
    fits = []
    monkeypatch.setattr(features, "PCA", lambda **options: fits.append(options) or PCA(**options))
    features.fitted_pca(train, 5)
    features.fitted_pca(train.copy(), 3)  # equal bytes, another array and width: no new fit
    assert len(fits) == 1
    changed = train.copy()
    changed[0, 0] += 1e-9
    features.fitted_pca(changed, 5)
    features.fitted_pca(train.astype(np.float32), 5)  # other bytes: a fit each
    assert len(fits) == 3
    for k in range(1, 10):  # only the last PCA_FITS_KEPT are kept
        features.fitted_pca(train + k, 2)
    assert len(features.PCA_FITS) == features.PCA_FITS_KEPT
    with pytest.raises(ValueError, match="between 1 and the fit's 30"):
        features.fitted_pca(train, 31)


def test_labeled_budget_is_balanced_seeded_and_reuses_the_semi_models_subset():
    labels = torch.arange(10).repeat(30)
    pick = features.labeled_budget(labels, 100, seed=3)
    assert np.bincount(labels.numpy()[pick], minlength=10).tolist() == [10] * 10
    assert np.array_equal(pick, labeled_subset(labels, 100, seed=3).numpy())
    assert not np.array_equal(pick, features.labeled_budget(labels, 100, seed=4))
    assert np.array_equal(features.labeled_budget(labels, None), np.arange(300))
    with pytest.raises(ValueError, match="multiple of 10"):
        features.labeled_budget(labels, 55)


def test_accuracy_by_budget_reports_each_budget():
    rng = np.random.default_rng(0)
    train_labels, test_labels = np.arange(10).repeat(30), np.arange(10).repeat(3)
    centres = np.eye(10) * 10
    train = centres[train_labels] + rng.standard_normal((300, 10))
    test = centres[test_labels] + rng.standard_normal((30, 10))
    result = features.accuracy_by_budget(train, train_labels, test, test_labels, budgets=(100, None))
    assert result == {100: {"knn": 1.0, "linear": 1.0}, None: {"knn": 1.0, "linear": 1.0}}


# -- chapter 5's experiments: the functions the chapter and benchmarks/applications.py share -------------------
def test_random_corruptions_are_reproducible_in_range_and_nothing_at_level_zero():
    from saae_lib.corruptions import random_corruptions

    images = torch.rand(64, 784, generator=generator(0))
    levels = dict(max_std=0.7, max_fraction=0.3, max_block=16)
    first = random_corruptions(images, generator(1), **levels)
    assert torch.equal(first, random_corruptions(images, generator(1), **levels))
    assert not torch.equal(first, random_corruptions(images, generator(2), **levels))
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    changed = (first != images).any(dim=1)
    assert changed.float().mean() > 0.9  # nearly every image changed (a level near 0 may leave one untouched)
    untouched = random_corruptions(images, generator(1), max_std=0.0, max_fraction=0.0, max_block=0)
    assert torch.equal(untouched, images)


def test_random_corruptions_use_all_three_kinds():
    from saae_lib.corruptions import random_corruptions

    gray = torch.full((300, 784), 0.5)
    out = random_corruptions(gray, generator(3), max_std=0.7, max_fraction=0.3, max_block=16)
    other = (out != 0.5)
    speckle = ((out == 0) | (out == 1) | ~other).all(dim=1) & (out == 1).any(dim=1)  # salt: only s&p makes 1s...
    noise = (other & (out != 0) & (out != 1)).any(dim=1)  # values strictly between: only Gaussian noise
    block = (~noise) & (~(out == 1).any(dim=1)) & (out == 0).any(dim=1)  # only zeros: a block (or pepper alone)
    assert speckle.any() and noise.any() and block.any()


def test_the_denoising_autoencoder_learns_from_corrupted_inputs(tiny_mnist, tiny_options):
    """Its reconstruction loss is measured against the clean image of a corrupted input: with the same weights and
    random stream, it equals the loss computed by hand from random_corruptions."""
    from saae_lib import models
    from saae_lib.corruptions import random_corruptions
    from saae_lib.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(model="dae", epochs=1, **tiny_options), tiny_mnist)
    x = tiny_mnist.train_images[:100]
    state = trainer.generator.get_state()
    model = trainer.model
    with torch.no_grad():
        expected = models.reconstruction_loss(model.decoder(model.encoder(random_corruptions(
            x, torch.Generator().set_state(state), **model.corruption))), x)
    trainer.generator.set_state(state)
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        corrupted = random_corruptions(x, trainer.generator, **model.corruption)
        assert not torch.equal(corrupted, x)
        got = models.reconstruction_loss(model.decoder(model.encoder(corrupted)), x)
    assert torch.allclose(got, expected)


def test_one_class_data_holds_one_digit_and_the_whole_test_set():
    data = prototype_mnist()
    subset = anomaly.one_class_data(data, 4)
    assert set(subset.train_labels.tolist()) == {4} and set(subset.val_labels.tolist()) == {4}
    assert len(subset.train_images) == 30 and len(subset.val_images) == 5
    assert torch.equal(subset.test_images, data.test_images)
    validation = anomaly.one_class_split(data, 4, on="validation")
    assert torch.equal(validation.images, data.val_images) and int(validation.is_anomaly.sum()) == 45
    with pytest.raises(ValueError, match="on must be one of test, validation"):
        anomaly.one_class_split(data, 4, on="train")


def tiny_aae(latent_dim=4, seed=0):
    torch.manual_seed(seed)
    return AdversarialAutoencoder(latent_dim=latent_dim, hidden=(16,), prior="gaussian").eval()


def test_one_class_aurocs_score_every_digit_with_every_score():
    data = prototype_mnist()
    table = anomaly.one_class_aurocs({3: tiny_aae(), 5: tiny_aae(seed=1)}, data)
    assert set(table) == set(anomaly.MODEL_SCORES + anomaly.BASELINE_SCORES)
    for per_digit in table.values():
        assert set(per_digit) == {3, 5} and all(0 <= v <= 1 for v in per_digit.values())
    # prototypes plus little noise: the classical baselines separate the digits perfectly
    assert table["nearest_neighbour"] == {3: 1.0, 5: 1.0} and table["pca"] == {3: 1.0, 5: 1.0}
    no_baselines = anomaly.one_class_aurocs({3: tiny_aae()}, data, on="validation", baselines=False)
    assert set(no_baselines) == set(anomaly.MODEL_SCORES)


def test_run_names_of_seeds():
    from saae_lib.checkpoints import run_name

    assert run_name("oneclass_3", 0) == "oneclass_3" and run_name("ae_32", 2) == "ae_32_seed2"


def test_corrupted_splits_are_fixed_and_differ_between_splits():
    images = torch.rand(20, 784, generator=generator(5))
    test = denoising.corrupted_split(images, "test")
    assert list(test) == [denoising.condition_name(k, v) for k, v in denoising.conditions()]
    assert len(test) == sum(len(levels) for levels in denoising.LEVELS.values())
    again = denoising.corrupted_split(images, "test")
    assert all(torch.equal(test[c], again[c]) for c in test)
    validation = denoising.corrupted_split(images, "validation")
    assert not torch.equal(test["gaussian 0.5"], validation["gaussian 0.5"])


def test_best_filters_pick_the_highest_validation_psnr(monkeypatch):
    clean = torch.rand(10, 784, generator=generator(6))
    noisy = {"slight": (clean + 0.01).clamp(0, 1), "all": torch.ones_like(clean)}
    monkeypatch.setattr(denoising, "FILTERS", {"identity": lambda x: x, "half": lambda x: x * 0 + 0.5})
    chosen = denoising.best_filters(clean, noisy)
    assert chosen == {"slight": "identity", "all": "half"}


def test_denoising_results_measure_every_condition_and_method():
    data = prototype_mnist(per_digit=(3, 3, 2))
    torch.manual_seed(0)
    model = Autoencoder(latent_dim=4, hidden=(16,)).eval()
    results = denoising.denoising_results({"autoencoder": model}, data)
    assert list(results) == list(denoising.corrupted_split(data.test_images, "test"))
    for entry in results.values():
        assert entry["filter"] in denoising.FILTERS
        assert set(entry) == {"corrupted input", "best filter", "autoencoder", "filter"}
        assert all(np.isfinite(entry[m]["psnr"]) and -1 <= entry[m]["ssim"] <= 1 for m in entry if m != "filter")


def test_denoising_results_take_the_filters_chosen_before_and_refuse_an_incomplete_choice():
    data = prototype_mnist(per_digit=(3, 3, 2))
    torch.manual_seed(0)
    model = Autoencoder(latent_dim=4, hidden=(16,)).eval()
    chosen = denoising.best_filters(data.val_images, denoising.corrupted_split(data.val_images, "validation"))
    assert denoising.denoising_results({"ae": model}, data, filters=chosen) == denoising.denoising_results(
        {"ae": model}, data)
    with pytest.raises(ValueError, match="for every condition"):
        denoising.denoising_results({"ae": model}, data, filters=dict(list(chosen.items())[:3]))
    with pytest.raises(ValueError, match="one of denoising.FILTERS"):
        denoising.denoising_results({"ae": model}, data, filters=dict.fromkeys(chosen, "bilateral"))


def test_bit_statistics_see_unbalanced_and_repeated_bits():
    rng = np.random.default_rng(0)
    fair = rng.random((4000, 8)) > 0.5
    stats = retrieval.bit_statistics(fair)
    assert stats["imbalance"] < 0.02 and stats["correlation"] < 0.05
    repeated = np.repeat(fair[:, :1], 8, axis=1)
    assert retrieval.bit_statistics(repeated)["correlation"] == pytest.approx(1.0)
    skewed = rng.random((4000, 8)) > 0.9
    assert retrieval.bit_statistics(skewed)["imbalance"] == pytest.approx(0.4, abs=0.02)


def test_retrieval_results_compare_the_models_with_the_baselines_at_each_width():
    data = prototype_mnist(per_digit=(10, 2, 3))
    results = retrieval.retrieval_results({4: tiny_aae(4)}, data, extra={"AE": Autoencoder(latent_dim=8,
                                                                                          hidden=(16,)).eval()})
    assert set(results) == {4, 8}
    assert set(results[4]) == {"AAE", "AAE + ITQ", *retrieval.BASELINES}
    assert set(results[8]) == {"AE", "AE + ITQ", *retrieval.BASELINES}
    for entries in results.values():
        for entry in entries.values():
            assert set(entry) == {"map", "precision_at_100", "imbalance", "correlation"}
            assert 0 <= entry["map"] <= 1
    assert results[8]["PCA-ITQ"]["map"] == 1.0  # ten well-separated prototypes: 8 ITQ bits rank them perfectly
    by_width = retrieval.retrieval_results({4: tiny_aae(4)}, data, extra={"AE": {
        4: Autoencoder(latent_dim=4, hidden=(16,)).eval(), 8: Autoencoder(latent_dim=8, hidden=(16,)).eval()}})
    assert {"AE", "AE + ITQ", "AAE", "AAE + ITQ"} <= set(by_width[4]) and {"AE", "AE + ITQ"} <= set(by_width[8])
    with pytest.raises(ValueError, match=r"extra\['AE'\]\[16\] has a 8-D code, not 16 bits"):
        retrieval.retrieval_results({4: tiny_aae(4)}, data, extra={"AE": {16: Autoencoder(latent_dim=8,
                                                                                           hidden=(16,))}})


def test_feature_results_and_baselines():
    data = prototype_mnist(per_digit=(20, 2, 5))
    codes = features.baseline_codes(data.train_images, data.test_images, dims=(2, 10))
    assert set(codes) == {"PCA 2-D", "PCA 10-D", "pixels"} and codes["PCA 10-D"][0].shape == (200, 10)
    results = features.feature_results(codes, data.train_labels, data.test_labels, budgets=(100, None))
    assert set(results["pixels"]) == {100, None}
    assert results["pixels"][None] == {"knn": 1.0, "linear": 1.0}


def test_map_and_precision_in_one_pass_equal_the_two_measures():
    rng = np.random.default_rng(3)
    database, queries = rng.random((300, 12)) > 0.5, rng.random((40, 12)) > 0.5
    database_labels, query_labels = rng.integers(0, 4, 300), rng.integers(0, 4, 40)
    both = retrieval.map_and_precision(queries, query_labels, database, database_labels, k=25, batch_size=7)
    assert both == (retrieval.mean_average_precision(queries, query_labels, database, database_labels),
                    retrieval.precision_at_k(queries, query_labels, database, database_labels, k=25))


def test_book_models_load_the_shipped_models_for_seed_0_only(monkeypatch):
    calls = {}

    def fake_train_or_load(name, **options):
        calls[name] = options
        return name

    monkeypatch.setattr(features, "train_or_load", fake_train_or_load)
    data = SimpleNamespace(device=torch.device("cpu"))
    assert set(features.book_models(data, seed=0, recipe="full")) == {"AE 2-D (ch. 1)", "AAE 2-D (ch. 2)",
                                                                       "semi 100 (ch. 4)"}
    assert {name: options["pretrained"] for name, options in calls.items()} == features.SHIPPED
    assert calls["semi_100"]["recipe"] == "full" and calls["semi_100"]["n_labels"] == 100
    registry = json.loads((Path(__file__).resolve().parent.parent / "pretrained" / "REGISTRY.json").read_text())
    assert set(features.SHIPPED.values()) <= {entry["name"] for entry in registry["models"]}
    calls.clear()
    features.book_models(data, seed=1)
    assert set(calls) == {"ae_seed1", "aae_gaussian_seed1", "semi_100_seed1"}
    assert all(options["pretrained"] is None and options["seed"] == 1 for options in calls.values())
    assert calls["semi_100_seed1"]["recipe"] == "quick"  # machine_recipe on a CPU
