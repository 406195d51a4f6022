"""Dictionary learning and sparse codes: store each example as a few atom indices and values.

A dictionary ``D`` (A atoms x P pixels, rows of unit norm) is learned from the data once;
each example ``x`` (P,) is then stored as a sparse code ``c`` (A,) with ``k << P`` non-zeros,
``x ~ c D``. Storing ``k`` (index, value) pairs instead of ``P`` pixels is the compression;
the dictionary itself is stored once and counts against the same byte budget.

Two ways to find a sparse code:

* **Orthogonal matching pursuit** (Pati et al. 1993; :func:`omp`): ``k`` greedy steps; each
  adds the atom most correlated with the residual, then refits all chosen coefficients by
  least squares. With the Gram matrix ``G = D D^T`` and ``b = D x`` precomputed, a step only
  needs ``G`` restricted to the support ("Batch-OMP", Rubinstein, Zibulevsky & Elad 2008),
  which lets many examples be coded at once.
* **ISTA/FISTA** (Daubechies et al. 2004; Beck & Teboulle 2009; :func:`ista`): proximal
  gradient descent on the lasso ``1/2 ||x - c D||^2 + lam ||c||_1``:
  ``c <- soft(c - (c D - x) D^T / L, lam / L)`` with ``L = ||D||_2^2`` and
  ``soft(v, t) = sign(v) max(|v| - t, 0)``; FISTA adds Nesterov momentum.

:func:`learn_dictionary` alternates OMP codes with the method of optimal directions (MOD,
Engan, Aase & Husoy 1999): the least-squares dictionary for fixed codes,
``D = (C^T C)^-1 C^T X``, rows renormalised, unused atoms replaced by badly coded examples.
:class:`SparseCodeStore` keeps the codes in ``k`` one-byte atom indices, ``k`` int8 values
and one float16 scale per example. Chapter 07 (data compression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator


def _check_dictionary(dictionary: np.ndarray, X: np.ndarray, fn: str) -> None:
    if dictionary.ndim != 2 or X.ndim != 2 or dictionary.shape[1] != X.shape[1]:
        raise ValueError(
            f"{fn}: expected X (N, P) and dictionary (A, P) with the same P, got X "
            f"{X.shape} and dictionary {dictionary.shape}"
        )


def omp(X: np.ndarray, dictionary: np.ndarray, n_nonzero: int, chunk: int = 512) -> np.ndarray:
    """Sparse codes of the rows of ``X`` by orthogonal matching pursuit.

    Parameters
    ----------
    X : ndarray (N, P)
    dictionary : ndarray (A, P)
        Atoms as rows, each of unit L2 norm.
    n_nonzero : int
        ``k``, the number of atoms per example (at most A).
    chunk : int
        Examples coded at a time (bounds the (chunk, A, k) gather of the Gram matrix).

    Returns
    -------
    ndarray (N, A)
        Codes with at most ``k`` non-zeros per row; ``codes @ dictionary`` approximates X.
    """
    X = np.asarray(X, dtype=np.float64)
    D = np.asarray(dictionary, dtype=np.float64)
    _check_dictionary(D, X, "omp")
    if not 1 <= n_nonzero <= D.shape[0]:
        raise ValueError(f"omp: n_nonzero must be in [1, {D.shape[0]}], got {n_nonzero}")
    G = D @ D.T
    codes = np.zeros((len(X), D.shape[0]))
    for start in range(0, len(X), chunk):
        codes[start : start + chunk] = _omp_chunk(X[start : start + chunk] @ D.T, G, n_nonzero)
    return codes


def _omp_chunk(b: np.ndarray, G: np.ndarray, k: int) -> np.ndarray:
    """Batch-OMP on correlations ``b = X D^T`` (n, A) with Gram matrix ``G`` (A, A)."""
    n = len(b)
    rows = np.arange(n)
    support = np.zeros((n, 0), dtype=np.int64)
    corr = b.copy()  # D r for the current residual r (r = x at the start)
    coef = np.zeros((n, 0))
    for _ in range(k):
        score = np.abs(corr)
        score[rows[:, None], support] = -1.0  # never pick an atom twice
        support = np.concatenate([support, np.argmax(score, axis=1)[:, None]], axis=1)
        G_ss = G[support[:, :, None], support[:, None, :]]  # (n, s, s)
        b_s = np.take_along_axis(b, support, axis=1)  # (n, s)
        coef = np.linalg.solve(G_ss, b_s[:, :, None])[:, :, 0]  # least squares on the support
        corr = b - np.einsum("nas,ns->na", G[:, support].transpose(1, 0, 2), coef)
    codes = np.zeros_like(b)
    codes[rows[:, None], support] = coef
    return codes


def ista(
    X: np.ndarray,
    dictionary: np.ndarray,
    lam: float,
    n_iter: int = 200,
    fista: bool = True,
) -> np.ndarray:
    """Lasso codes ``argmin_c 1/2 ||x - c D||^2 + lam ||c||_1`` of the rows of ``X``.

    Parameters
    ----------
    X : ndarray (N, P); dictionary : ndarray (A, P)
    lam : float
        The L1 weight; larger gives sparser codes.
    n_iter : int
        Proximal gradient steps.
    fista : bool, default True
        Use FISTA's momentum (error O(1/t^2) instead of O(1/t)).

    Returns
    -------
    ndarray (N, A)
    """
    X = np.asarray(X, dtype=np.float64)
    D = np.asarray(dictionary, dtype=np.float64)
    _check_dictionary(D, X, "ista")
    if lam < 0:
        raise ValueError(f"ista: lam must be >= 0, got {lam}")
    step = 1.0 / np.linalg.norm(D, 2) ** 2  # 1 / L, L = largest eigenvalue of D D^T
    G, b = D @ D.T, X @ D.T
    c = np.zeros((len(X), D.shape[0]))
    y, t = c, 1.0
    for _ in range(n_iter):
        v = y - step * (y @ G - b)  # gradient of 1/2 ||x - yD||^2 is yG - b
        c_new = np.sign(v) * np.maximum(np.abs(v) - step * lam, 0.0)
        if fista:
            t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
            y = c_new + ((t - 1) / t_new) * (c_new - c)
            t = t_new
        else:
            y = c_new
        c = c_new
    return c


def learn_dictionary(
    X: np.ndarray,
    n_atoms: int,
    n_nonzero: int,
    n_iter: int = 10,
    seed: SeedLike = 0,
) -> tuple[np.ndarray, list[float]]:
    """Learn a dictionary by alternating OMP codes and MOD updates.

    Parameters
    ----------
    X : ndarray (N, P)
        Training examples (e.g. flattened images in [0, 1]).
    n_atoms : int
        A, the number of atoms.
    n_nonzero : int
        k, the atoms per example used while learning.
    n_iter : int
        Alternations.
    seed : int or Generator
        The initial atoms are ``n_atoms`` random examples.

    Returns
    -------
    dictionary : ndarray (A, P), rows of unit norm
    errors : list of float
        Relative reconstruction error ``||X - C D||_F / ||X||_F`` after each iteration's
        coding step (non-increasing up to the atom replacements).
    """
    X = np.asarray(X, dtype=np.float64)
    rng = as_generator(seed)
    if not 1 <= n_nonzero <= n_atoms <= len(X):
        raise ValueError(
            f"learn_dictionary: need 1 <= n_nonzero <= n_atoms <= N, got n_nonzero="
            f"{n_nonzero}, n_atoms={n_atoms}, N={len(X)}"
        )
    D = _normalize_rows(X[rng.choice(len(X), n_atoms, replace=False)].copy(), rng)
    norm_x, errors = np.linalg.norm(X), []
    for _ in range(n_iter):
        C = omp(X, D, n_nonzero)
        residual = X - C @ D
        errors.append(float(np.linalg.norm(residual) / norm_x))
        D = np.linalg.lstsq(C, X, rcond=None)[0]  # MOD: argmin_D ||X - C D||_F
        unused = np.flatnonzero(~np.any(C != 0, axis=0))
        if unused.size:  # restart dead atoms on the worst-coded examples
            worst = np.argsort(-np.linalg.norm(residual, axis=1))[: unused.size]
            D[unused] = X[worst]
        D = _normalize_rows(D, rng)
    return D, errors


def _normalize_rows(D: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    norms = np.linalg.norm(D, axis=1)
    dead = norms < 1e-12
    D[dead] = rng.standard_normal((int(dead.sum()), D.shape[1]))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


@dataclass
class SparseCodeStore:
    """Examples stored as sparse codes over a dictionary, in compact integer form.

    Per example: ``k`` atom indices (uint8 when A <= 256, else uint16), ``k`` values
    quantized to int8 with one float16 scale (``value ~ scale * q / 127``). The dictionary is
    stored as int8 with one float16 scale per atom.

    Attributes
    ----------
    index : ndarray (N, k)
    value : ndarray of int8 (N, k)
    scale : ndarray of float16 (N,)
    atoms : ndarray of int8 (A, P)
    atom_scale : ndarray of float16 (A,)
    """

    index: np.ndarray
    value: np.ndarray
    scale: np.ndarray
    atoms: np.ndarray
    atom_scale: np.ndarray

    @classmethod
    def encode(cls, X: np.ndarray, dictionary: np.ndarray, n_nonzero: int) -> SparseCodeStore:
        """OMP codes of ``X`` (N, P) over ``dictionary`` (A, P), quantized for storage."""
        atoms, atom_scale = _int8_rows(dictionary)
        D = atoms.astype(np.float64) * (atom_scale.astype(np.float64)[:, None] / 127.0)
        codes = omp(X, D, n_nonzero)  # code against the dictionary as it is stored
        index = np.argsort(-np.abs(codes), axis=1, kind="stable")[:, :n_nonzero]
        values = np.take_along_axis(codes, index, axis=1)
        q, scale = _int8_rows(values)
        dtype = np.uint8 if dictionary.shape[0] <= 256 else np.uint16
        return cls(index.astype(dtype), q, scale, atoms, atom_scale)

    @property
    def code_bytes(self) -> int:
        """Bytes of the codes (indices, values, scales) of all examples."""
        return int(self.index.nbytes + self.value.nbytes + self.scale.nbytes)

    @property
    def dictionary_bytes(self) -> int:
        return int(self.atoms.nbytes + self.atom_scale.nbytes)

    @property
    def nbytes(self) -> int:
        """Everything stored: codes and dictionary."""
        return self.code_bytes + self.dictionary_bytes

    def decode(self) -> np.ndarray:
        """Reconstructed examples (N, P), float32."""
        D = self.atoms.astype(np.float32) * (self.atom_scale.astype(np.float32)[:, None] / 127)
        values = self.value.astype(np.float32) * (self.scale.astype(np.float32)[:, None] / 127)
        out = np.zeros((len(self.index), D.shape[1]), dtype=np.float32)
        for j in range(self.index.shape[1]):
            out += values[:, j : j + 1] * D[self.index[:, j].astype(np.int64)]
        return out


def _int8_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization per row: ``a ~ q * scale / 127``, scale = max |row|."""
    a = np.asarray(a, dtype=np.float64)
    scale = np.abs(a).max(axis=1).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float64), 1.0)
    q = np.clip(np.rint(a / safe[:, None] * 127), -127, 127).astype(np.int8)
    return q, scale
