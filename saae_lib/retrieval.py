"""Retrieval by semantic hashing (Salakhutdinov & Hinton, 2009): each image becomes a short binary code, and the
images nearest a query are those whose codes differ from its code in the fewest bits.

An adversarial autoencoder with a Gaussian prior suits this well: each code dimension is pushed towards N(0, 1), so
its sign is a bit that is 1 for about half the images. The baselines with the same number of bits: random
projections (LSH), PCA, and PCA with iterative quantization (ITQ, Gong & Lazebnik, 2011). Beside each AAE, the plain
autoencoder of the same width: what the prior adds to a hash, or costs.

Bits are numpy bool arrays (n, n_bits); `pack_bits` turns them into bytes, 8 bits each, for the fast distances.
Relevant means "the same label"; a ranking is by Hamming distance, ties broken by database index (lower first).
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.decomposition import PCA

from .checkpoints import run_name, train_or_load
from .denoising import AUTOENCODER_OPTIONS
from .features import as_array, as_labels, as_points, fitted_pca, model_codes

POPCOUNT_16 = np.array([bin(value).count("1") for value in range(1 << 16)], dtype=np.uint8)  # set bits of each uint16
BLOCK = 1 << 24  # query x database pairs per block of distances (16 Mi: 128 MB of uint64 XORs), to bound memory


def sign_codes(codes, threshold=0.0) -> np.ndarray:
    """b = [z > t]: one bit per code dimension (t: a scalar, or one threshold per dimension)."""
    return as_points(codes, "codes") > as_array(threshold)


def check_bits(bits, name: str) -> np.ndarray:
    bits = as_array(bits)
    if bits.ndim != 2 or not (bits.dtype == bool or np.isin(bits, (0, 1)).all()):
        raise ValueError(f"{name} must be an (n, n_bits) array of bits (bool or 0/1), got {bits.dtype} {bits.shape}")
    return bits.astype(bool)


def check_bit_pair(query_bits, database_bits) -> tuple[np.ndarray, np.ndarray]:
    query_bits, database_bits = check_bits(query_bits, "query_bits"), check_bits(database_bits, "database_bits")
    if query_bits.shape[1] != database_bits.shape[1]:
        raise ValueError(f"queries have {query_bits.shape[1]} bits but the database {database_bits.shape[1]}: code "
                         "both with the same model or baseline")
    return query_bits, database_bits


def pack_bits(bits) -> np.ndarray:
    """Bits (n, n_bits) packed 8 to a byte, first bit in the high bit (numpy.packbits): (n, ceil(n_bits / 8))
    uint8, zero-padded."""
    return np.packbits(check_bits(bits, "bits"), axis=1)


def as_words(packed: np.ndarray) -> np.ndarray:
    """Packed bytes (n, n_bytes) as uint64 words (n, ceil(n_bytes / 8)), zero-padded: one XOR per 64 bits."""
    n, n_bytes = packed.shape
    padded = np.zeros((n, -(-n_bytes // 8) * 8), dtype=np.uint8)
    padded[:, :n_bytes] = packed
    return padded.view(np.uint64)


def popcount(words: np.ndarray, table: bool = False) -> np.ndarray:
    """The number of set bits of each uint64: numpy's bitwise_count (numpy >= 2.0), or (without it, or with
    table=True) a lookup table of the 65,536 uint16 values, four lookups per word."""
    if hasattr(np, "bitwise_count") and not table:
        return np.bitwise_count(words)
    halves = np.ascontiguousarray(words).view(np.uint16)  # ..., 4 * n_words
    return POPCOUNT_16[halves].reshape(*words.shape, 4).sum(axis=-1, dtype=np.uint8)


def hamming_distances(query_bits, database_bits, packed: bool = False, table: bool = False) -> np.ndarray:
    """D[i, j] = sum_b [q_ib != d_jb], the number of bits in which query i and database item j differ, as an int32
    (n_queries, n_database) array: popcount(q XOR d) on 64-bit words, a block of queries at a time.

    packed=True: both are pack_bits outputs already (pack the database once when timing queries)."""
    if not packed:
        query_bits, database_bits = (np.packbits(bits, axis=1) for bits in check_bit_pair(query_bits, database_bits))
    elif not (query_bits.dtype == database_bits.dtype == np.uint8 and query_bits.shape[1] == database_bits.shape[1]):
        raise ValueError("packed=True takes two pack_bits outputs (uint8) of the same width")
    queries = as_words(query_bits)  # n_q, n_words
    database = np.ascontiguousarray(as_words(database_bits).T)  # n_words, n_db: one row per word, read in one go
    step = max(1, BLOCK // max(1, database.shape[1]))
    distances = np.zeros((len(queries), database.shape[1]), dtype=np.int32)
    for start in range(0, len(queries), step):
        block = distances[start : start + step]  # step, n_db (a view: filled in place)
        for word in range(database.shape[0]):  # one 2-D XOR per 64 bits (no 3-D temporary, no reduction)
            block += popcount(queries[start : start + step, word, None] ^ database[None, word], table)
    return distances


def ranked_relevance(distances: np.ndarray, query_labels: np.ndarray, database_labels: np.ndarray,
                     top_k: int | None) -> np.ndarray:
    """rel[i, r] = whether the database item at rank r for query i has the query's label; ranks by distance, ties by
    database index (a stable sort; on integer distances of up to 16 bits numpy sorts them by radix)."""
    if np.issubdtype(distances.dtype, np.integer) and distances.max(initial=0) < 1 << 16:
        distances = distances.astype(np.uint16)
    order = np.argsort(distances, axis=1, kind="stable")[:, :top_k]  # n_q, top_k
    relevant = database_labels[None, :] == query_labels[:, None]  # n_q, n_db: bools, not a gathered int64 copy
    return np.take_along_axis(relevant, order, axis=1)


def check_retrieval(query_bits, query_labels, database_bits, database_labels, top_k):
    query_bits, database_bits = check_bit_pair(query_bits, database_bits)
    if top_k is not None and not 1 <= top_k <= len(database_bits):
        raise ValueError(f"top_k must be between 1 and the {len(database_bits)} database items (or None), got {top_k}")
    return (np.packbits(query_bits, axis=1), as_labels(query_labels, len(query_bits), "query_labels"),
            np.packbits(database_bits, axis=1), as_labels(database_labels, len(database_bits), "database_labels"))


def per_query_blocks(measure, query_bits, query_labels, database_bits, database_labels, top_k, batch_size) -> list:
    """[measure(ranked_relevance of a block)] for each block of batch_size queries, in query order (a full 10,000 x
    55,000 distance matrix would be 2.2 GB). The blocks run on as many threads as torch uses (torch.get_num_threads:
    numpy's sorts and element-wise work let go of the GIL), which changes no number: each query is ranked alone."""
    queries, query_labels, database, database_labels = check_retrieval(query_bits, query_labels, database_bits,
                                                                        database_labels, top_k)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    def block(start):
        distances = hamming_distances(queries[start : start + batch_size], database, packed=True)
        return measure(ranked_relevance(distances, query_labels[start : start + batch_size], database_labels, top_k))

    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        return list(pool.map(block, range(0, len(queries), batch_size)))


def average_precisions(relevant: np.ndarray) -> np.ndarray:
    """AP_i = sum_r P_i(r) rel_i(r) / sum_r rel_i(r) over the ranks r of the list, P_i(r) the share of relevant items
    among the first r; 0 for a query with no relevant item in its list.

    Only the relevant ranks count, and at the k-th relevant item of a list, at rank r, P(r) = k / r: so AP_i is the
    mean of k / r over the query's relevant items, found with one np.nonzero (no running sums over whole lists)."""
    rows, columns = np.nonzero(relevant)  # row by row, each row's ranks (from 0) in order
    found = np.bincount(rows, minlength=len(relevant))  # n_q: relevant items in each list
    before = np.cumsum(found) - found  # n_q: relevant items of the earlier rows
    k = np.arange(1, len(rows) + 1) - before[rows]  # which relevant item of its row each one is: 1, 2, ...
    sums = np.bincount(rows, weights=k / (columns + 1), minlength=len(relevant))  # n_q
    return np.where(found > 0, sums / np.maximum(found, 1), 0.0)


def mean_average_precision(query_bits, query_labels, database_bits, database_labels, top_k: int | None = None,
                           batch_size: int = 64) -> float:
    """mAP = mean_i AP_i over the queries, each query's database ranked by Hamming distance (ties broken by
    database index), relevant = same label.

    top_k=None: AP over the whole ranking (the denominator is every relevant database item). top_k=K: mAP@K as the
    hashing literature computes it, AP over the first K items, divided by the relevant items among them."""
    return float(np.concatenate(per_query_blocks(average_precisions, query_bits, query_labels, database_bits,
                                                 database_labels, top_k, batch_size)).mean())


def precision_at_k(query_bits, query_labels, database_bits, database_labels, k: int = 100,
                   batch_size: int = 64) -> float:
    """The mean over queries of the share of same-label items among the k nearest in Hamming distance (ties broken
    by database index)."""
    return float(np.concatenate(per_query_blocks(lambda relevant: relevant.mean(axis=1), query_bits, query_labels,
                                                 database_bits, database_labels, k, batch_size)).mean())


def map_and_precision(query_bits, query_labels, database_bits, database_labels, k: int = 100,
                      batch_size: int = 64) -> tuple[float, float]:
    """(mean_average_precision over the whole ranking, precision_at_k) from one ranking of each query: the same
    numbers as the two functions, at half the cost."""
    blocks = per_query_blocks(lambda relevant: (average_precisions(relevant), relevant[:, :k].mean(axis=1)),
                              query_bits, query_labels, database_bits, database_labels, None, batch_size)
    precisions, at_k = zip(*blocks, strict=True)
    return float(np.concatenate(precisions).mean()), float(np.concatenate(at_k).mean())


# -- baselines with the same number of bits ----------------------------------------------------------------------
def check_n_bits(train: np.ndarray, n_bits: int, most: int | None = None) -> None:
    if n_bits < 1 or (most is not None and n_bits > most):
        limit = f"between 1 and {most} for {train.shape[0]} training points of dimension {train.shape[1]}"
        raise ValueError(f"n_bits must be {limit if most is not None else 'at least 1'}, got {n_bits}")


def lsh_bits(train, x, n_bits: int, seed: int = 0) -> np.ndarray:
    """Random-projection LSH (Charikar, 2002): b = [W^T (x - mean) > 0], W (d, n_bits) with N(0, 1) entries drawn
    from `seed`, mean the training mean (centring makes each bit split the data, not all land on one side)."""
    train, x = as_points(train, "train"), as_points(x, "x")
    check_n_bits(train, n_bits)
    projections = np.random.default_rng(seed).standard_normal((train.shape[1], n_bits))  # d, n_bits
    return (x - train.mean(axis=0)) @ projections > 0


def fit_pca(train: np.ndarray, n_bits: int) -> PCA:
    """scikit-learn's PCA with the exact SVD (no seed: the same directions every time; features.fitted_pca, which
    remembers one full fit per training set: PCA hashing at 16 and 32 bits share one, PCA-ITQ's float64 data
    another)."""
    check_n_bits(train, n_bits, min(train.shape))
    return fitted_pca(train, n_bits)


def pca_bits(train, x, n_bits: int) -> np.ndarray:
    """PCA hashing: b = [W^T (x - mean) > 0], W the first n_bits principal directions of the training data."""
    train, x = as_points(train, "train"), as_points(x, "x")
    return fit_pca(train, n_bits).transform(x) > 0


def signs(values: np.ndarray) -> np.ndarray:
    """sgn(v) in {-1, +1}, with sgn(0) = +1 (a bit must be one or the other)."""
    return np.where(values >= 0, 1.0, -1.0)


@dataclass
class ITQ:
    """A fitted iterative quantization: the PCA and the rotation R; losses[t] = ||B - V R||_F^2 after iteration t."""

    pca: PCA
    rotation: np.ndarray  # n_bits, n_bits, orthogonal
    losses: list[float] = field(default_factory=list)

    def bits(self, x) -> np.ndarray:
        """b = [W^T (x - mean) R >= 0]."""
        return signs(self.pca.transform(as_points(x, "x")) @ self.rotation) > 0


def fit_itq(train, n_bits: int, n_iterations: int = 50, seed: int = 0) -> ITQ:
    """Iterative quantization (Gong & Lazebnik, 2011): V = the training data projected on its first n_bits
    principal directions (n, c), then minimise the quantisation loss

        Q(B, R) = ||B - V R||_F^2   over B in {-1, +1}^(n x c) and orthogonal R (c x c),

    from a random orthogonal R (QR of a Gaussian matrix drawn from `seed`), alternating n_iterations times:
    B = sgn(V R) (the best B for this R), then the orthogonal Procrustes solution R = U W^T, where
    U S W^T = SVD(V^T B) (the best R for this B). Neither step can raise Q, so `losses` does not increase."""
    train = as_points(train, "train").astype(np.float64)
    pca = fit_pca(train, n_bits)
    projected = pca.transform(train)  # n, c
    gaussian = np.random.default_rng(seed).standard_normal((n_bits, n_bits))
    rotation, _ = np.linalg.qr(gaussian)  # c, c
    losses = []
    for _ in range(n_iterations):
        binary = signs(projected @ rotation)  # n, c
        u, _, wt = np.linalg.svd(projected.T @ binary)
        rotation = u @ wt
        losses.append(float(((binary - projected @ rotation) ** 2).sum()))
    return ITQ(pca=pca, rotation=rotation, losses=losses)


def itq_bits(train, x, n_bits: int, n_iterations: int = 50, seed: int = 0) -> np.ndarray:
    """PCA-ITQ bits of x, fit on train (fit_itq)."""
    return fit_itq(train, n_bits, n_iterations, seed).bits(x)


# -- the chapter's experiment: AAE bits against the baselines at 16 and 32 bits ------------------------------------
# One AAE per code length, its code as wide as the bits: codes that follow N(0, I) would make each sign bit fire for
# half the images and the bits uncorrelated, what ITQ's rotation works to get for PCA's projections. (Measured in
# chapter 5, these AAEs' codes do not follow it per dimension; ITQ's rotation of their codes repairs the balance.)
HASHER_OPTIONS = dict(model="aae", prior="gaussian", hidden=(512, 512), epochs=20)
BITS = (16, 32)
BASELINES = {"LSH": lsh_bits, "PCA": pca_bits, "PCA-ITQ": itq_bits}


def train_hashers(data, *, seed: int = 0, progress=None, bits=BITS, **options) -> dict:
    """{n_bits: trainer}: an AAE with an n_bits-D Gaussian code per code length (HASHER_OPTIONS and `options`),
    trained or loaded from runs/aae_NBITS[_seedK]."""
    return {n: train_or_load(run_name(f"aae_{n}", seed), data=data, latent_dim=n, seed=seed, progress=progress,
                             **{**HASHER_OPTIONS, **options})
            for n in bits}


def train_autoencoders(data, *, seed: int = 0, progress=None, bits=BITS) -> dict:
    """{n_bits: trainer}: a plain autoencoder with an n_bits-D code per code length, with the options of chapter 5's
    denoising comparison (denoising.AUTOENCODER_OPTIONS), trained or loaded from runs/ae_NBITS[_seedK]: the 32-D one
    is that comparison's plain autoencoder, the same run."""
    return {n: train_or_load(run_name(f"ae_{n}", seed), data=data, model="ae", seed=seed, progress=progress,
                             **{**AUTOENCODER_OPTIONS, "latent_dim": n})
            for n in bits}


def model_bits(model, images) -> np.ndarray:
    """b = [z > 0], z = enc(x): the signs of the model's codes, one bit per code dimension."""
    return sign_codes(model_codes(model, images))


def bit_statistics(bits) -> dict:
    """How well the bits use their capacity: the mean |P(b = 1) - 1/2| over bits (0: each bit splits the images
    in half) and the mean |correlation| between pairs of bits (0: no bit repeats another)."""
    bits = check_bits(bits, "bits").astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant bit has no correlation: nan, left out
        correlation = np.corrcoef(bits, rowvar=False)  # n_bits, n_bits
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    return {"imbalance": float(np.abs(bits.mean(axis=0) - 0.5).mean()),
            "correlation": float(np.nanmean(np.abs(off_diagonal)))}


def retrieval_results(models: dict, data, extra: dict | None = None) -> dict[int, dict]:
    """{n_bits: {method: {"map", "precision_at_100", "imbalance", "correlation"}}}: every test image a query
    against the whole training set, relevant = same label. Methods: each AAE (models: n_bits -> model) as "AAE"
    (the signs of its code) and "AAE + ITQ" (ITQ's rotation fit on its training codes, then the signs), the
    baselines fit on the training images, and `extra` ({name: model, or {n_bits: model}}: other models, e.g. the
    plain autoencoders, each entered at the width of its code, with and without ITQ)."""
    train, test = data.train_images.cpu().numpy(), data.test_images.cpu().numpy()
    train_labels, test_labels = data.train_labels.cpu().numpy(), data.test_labels.cpu().numpy()
    coders = {n: {"AAE": model} for n, model in models.items()}
    for name, entry in (extra or {}).items():
        for n_bits, model in (entry.items() if isinstance(entry, dict) else [(entry.latent_dim, entry)]):
            if model.latent_dim != n_bits:
                raise ValueError(f"extra[{name!r}][{n_bits}] has a {model.latent_dim}-D code, not {n_bits} bits")
            coders.setdefault(n_bits, {})[name] = model
    results = {}
    for n_bits, named in sorted(coders.items()):
        codes = {}
        for name, model in named.items():
            train_codes, test_codes = model_codes(model, data.train_images), model_codes(model, data.test_images)
            codes[name] = (sign_codes(train_codes), sign_codes(test_codes))
            itq = fit_itq(train_codes, n_bits)
            codes[f"{name} + ITQ"] = (itq.bits(train_codes), itq.bits(test_codes))
        codes |= {name: (make(train, train, n_bits), make(train, test, n_bits)) for name, make in BASELINES.items()}
        results[n_bits] = {}
        for name, (database, queries) in codes.items():
            average, at_100 = map_and_precision(queries, test_labels, database, train_labels, k=100)
            results[n_bits][name] = {"map": average, "precision_at_100": at_100, **bit_statistics(database)}
    return results
