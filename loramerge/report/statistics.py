"""Does task similarity predict merge retention? Each combination's similarity, Spearman's ρ against its mean
normalized accuracy with a permutation p-value, and the verdict on the vision study's finding in plain sentences.

Apart from the tables because this is the report's only inference: a handful of points, p-values, and sentences whose
wording depends on them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, permutation_test, rankdata, spearmanr

from loramerge.atomic import read_json
from loramerge.combinations import member_pairs
from loramerge.config import Params
from loramerge.lists import combination_kind, split_combination
from loramerge.paths import SIMILARITY
from loramerge.records import SIMILARITY_MEASURES


def similarity_table(params: Params) -> pd.DataFrame:
    """Every measure per combination: a pair's as the similarity stage wrote it, a triple's as the
    mean over its three pairs. Empty when the similarity stage has not run."""
    if not SIMILARITY.exists():
        return pd.DataFrame(columns=["combination", "kind", *SIMILARITY_MEASURES])
    pairs = pd.DataFrame.from_dict(read_json(SIMILARITY)["pairs"], orient="index")[list(SIMILARITY_MEASURES)]
    rows = []
    for combo in params.combinations:
        rows.append(
            {"combination": combo, "kind": combination_kind(combo), **pairs.loc[member_pairs(combo)].mean().to_dict()}
        )
    return pd.DataFrame(rows)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's ρ and its two-sided p-value from a permutation test.

    scipy's spearmanr p-value comes from a t approximation that is badly off for the handful
    of pairs and triples we have (it reports p = 0 for three points in order); the
    permutation test is exact up to 7 points and a seeded Monte-Carlo estimate beyond.
    NaN when fewer than 3 points or either side is constant (no ranking to compare).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rho = float(spearmanr(x, y).statistic)
    ranks_y = rankdata(y)

    def rank_correlation(ranks_x: np.ndarray, axis: int) -> np.ndarray:  # Pearson on ranks = Spearman, vectorized
        return pearsonr(ranks_x, np.broadcast_to(ranks_y, ranks_x.shape), axis=axis).statistic

    # one sample permuted against the fixed other: n! pairings, enumerated exactly when n! <= n_resamples
    test = permutation_test(
        (rankdata(x),), rank_correlation, permutation_type="pairings", vectorized=True, n_resamples=9999, rng=0
    )
    return rho, float(test.pvalue)


def smallest_p(points: int) -> float:
    """The smallest two-sided p-value an exact permutation test of a rank correlation can give over `points`
    items: only the two perfect orderings out of n! are that extreme (3 items: 1/3; 4: 1/12; 6: 1/360)."""
    return min(1.0, 2 / math.factorial(points)) if points >= 1 else 1.0


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjustment (family-wise error over the values given; NaN stays NaN and is not counted):
    the i-th smallest of m p-values is multiplied by m − i, made monotone, capped at 1."""
    valid = p_values.dropna().sort_values()
    steps = (valid * np.arange(len(valid), 0, -1)).cummax().clip(upper=1.0)
    return steps.reindex(p_values.index)


def correlations(combos: pd.DataFrame, similarity: pd.DataFrame, counted: list[str] | None = None) -> pd.DataFrame:
    """Per method, kind and measure: how the measure ranks combinations against their mean normalized accuracy,
    with `p_holm`, the p-value Holm-adjusted over the `counted` methods (default all; a method whose results are
    another's is not counted twice, its `p_holm` is NaN) tested for the same kind and measure: the methods are
    scored on the same combinations, so one of them reaching p < 0.05 by chance is likely."""
    joined = combos.merge(similarity, on=["combination", "kind"])
    rows = []
    for (method, kind), group in joined.groupby(["method", "kind"], sort=False):
        for measure in SIMILARITY_MEASURES:
            rho, p = spearman(group[measure], group["normalized_accuracy"])
            rows.append({"method": method, "kind": kind, "measure": measure, "n": len(group), "rho": rho, "p": p})
    table = pd.DataFrame(rows, columns=["method", "kind", "measure", "n", "rho", "p"])
    family = table["method"].isin(counted if counted is not None else table["method"])
    table["p_holm"] = table["p"].where(family).groupby([table["kind"], table["measure"]], group_keys=False).apply(holm)
    return table


def direction_counts(corr: pd.DataFrame, kind: str, measure: str, significance: float) -> dict:
    """How many methods see a positive / negative ρ for one measure, and how many of those are significant."""
    rows = corr[(corr["kind"] == kind) & (corr["measure"] == measure)].dropna(subset=["rho"])
    significant = rows["p_holm"] < significance
    return {
        "methods": len(rows),
        "n": int(rows["n"].max()) if len(rows) else 0,
        "median_rho": rows["rho"].median(),
        "negative": int((rows["rho"] < 0).sum()),
        "positive": int((rows["rho"] > 0).sum()),
        "significant_negative": int(((rows["rho"] < 0) & significant).sum()),
        "significant_positive": int(((rows["rho"] > 0) & significant).sum()),
    }


def agreement(cos: dict, mmd: dict) -> str:
    """Whether the two data measures point the same way: cosine with ρ < 0 and MMD with ρ > 0 both favour dissimilar data."""
    if not mmd["methods"]:
        return "MMD gives no ranking to compare."
    cos_dissimilar, mmd_dissimilar = cos["negative"] > cos["methods"] / 2, mmd["positive"] > mmd["methods"] / 2
    if cos_dissimilar == mmd_dissimilar:
        return "the two data measures agree."
    return (
        f"the two data measures disagree (MMD {'favours dissimilar' if mmd_dissimilar else 'favours similar'} data), "
        "so the data do not settle the question."
    )


def verdict(corr: pd.DataFrame, significance: float) -> list[str]:
    """Plain sentences, from the numbers, on the vision study's finding: dissimilar data merges better.

    The finding predicts ρ(data cosine, normalized accuracy) < 0 over pairs, and ρ > 0 for the
    MMD distance. It "holds" only when most methods show a significant negative ρ.
    """
    cos = direction_counts(corr, "pair", "data_cosine", significance)
    if cos["methods"] == 0:
        return [
            "The vision study's finding (adapters on dissimilar data merge better) cannot be tested here: "
            "fewer than 3 pairs with varying scores, or no similarity measured."
        ]
    majority = cos["methods"] / 2
    if smallest_p(cos["n"]) >= significance:
        answer = (
            f"cannot be tested for significance here: with {cos['n']} pairs no ranking reaches p < {significance:g} "
            f"(the smallest possible p is {smallest_p(cos['n']):.2g})"
        )
    elif cos["significant_negative"] > majority:
        answer = "holds here"
    elif cos["significant_positive"] > majority:
        answer = "is reversed here: pairs with more similar data merge better"
    elif cos["negative"] > majority:
        answer = "is not supported here: the direction agrees, but not significantly for most methods"
    elif cos["positive"] > majority:
        answer = "is not supported here: if anything, pairs with more similar data merge better, but not significantly"
    else:
        answer = "is not supported here: no consistent direction across methods"
    mmd = direction_counts(corr, "pair", "data_mmd", significance)
    sentences = [
        f"The vision study's finding, that adapters on dissimilar data merge better, {answer}.",
        f"Over {cos['n']} pairs, Spearman's ρ between data cosine similarity and mean normalized accuracy is negative for "
        f"{cos['negative']} of the {cos['methods']} methods whose scores vary (median ρ = {cos['median_rho']:.2f}); significant (Holm-adjusted over the methods, p < {significance:g}) "
        f"and negative for {cos['significant_negative']}, significant and positive for {cos['significant_positive']}. The finding predicts ρ < 0.",
        f"Data MMD, a distance (the finding predicts ρ > 0): ρ > 0 for {mmd['positive']} of {mmd['methods']} methods "
        f"(median ρ = {mmd['median_rho']:.2f}); {agreement(cos, mmd)}",
    ]
    triples = direction_counts(corr, "triple", "data_cosine", significance)
    if triples["methods"]:
        sentences.append(
            f"Over {triples['n']} triples (mean pairwise data cosine): median ρ = {triples['median_rho']:.2f}, "
            f"negative for {triples['negative']} of {triples['methods']} methods, significant for "
            f"{triples['significant_negative'] + triples['significant_positive']}"
            + (
                f" (no result could be: with {triples['n']} triples the smallest possible p is "
                f"{smallest_p(triples['n']):.2g})."
                if smallest_p(triples["n"]) >= significance
                else "."
            )
        )
    small = cos["n"] < 10
    sentences.append(
        f"{'Small sample' if small else 'Sample'}: {cos['n']} pairs (the smallest p-value an exact permutation test "
        f"can give is {smallest_p(cos['n']):.2g}). Every method is scored on the same pairs, so the "
        "methods' correlations are not independent evidence"
        + (
            "; with so few points only a very strong ranking reaches significance, so read these numbers as "
            "indicative, not as a test of the finding."
            if small
            else "."
        )
    )
    return sentences


def rho_interval(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of Spearman's ρ over combinations resampled with replacement: how far the ranking
    could move with other combinations of the same kind. Resamples with a constant side have no ρ and are skipped;
    NaN when fewer than 3 combinations."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    rhos = [spearmanr(x[rows], y[rows]).statistic for rows in draws if np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0]
    if not rhos:
        return float("nan"), float("nan")
    low, high = np.percentile(rhos, [2.5, 97.5])
    return float(low), float(high)


def partial_spearman(x: np.ndarray, y: np.ndarray, control: np.ndarray) -> tuple[float, float]:
    """Spearman's ρ of x and y with `control` held fixed, and its permutation p-value.

    Ranks of x and y are each regressed on the ranks of the control (least squares); ρ is the Pearson correlation
    of the two residuals. The p-value permutes one residual against the other (exact up to 7 points). Here the
    control is how much the members' adapters gained over head-only: a strong adapter has more to lose, which
    could make similar-looking pairs seem to merge worse for that reason alone. NaN below 4 points."""
    x, y, control = (np.asarray(v, float) for v in (x, y, control))
    if len(x) < 4 or np.ptp(control) == 0:
        return float("nan"), float("nan")
    design = np.column_stack([np.ones(len(x)), rankdata(control)])

    def residual(values: np.ndarray) -> np.ndarray:
        ranks = rankdata(values)
        return ranks - design @ np.linalg.lstsq(design, ranks, rcond=None)[0]

    rx, ry = residual(x), residual(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan"), float("nan")
    test = permutation_test(
        (rx,),
        lambda r, axis: pearsonr(r, np.broadcast_to(ry, r.shape), axis=axis).statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=9999,
        rng=0,
    )
    return float(pearsonr(rx, ry).statistic), float(test.pvalue)


def group_contrast(values: np.ndarray, similar: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """Mean of the similar pairs minus mean of the others, a 95% bootstrap interval (each group resampled on its
    own, as the groups were fixed in advance), and a two-sided permutation p-value over relabellings of which
    pairs are "similar" (every relabelling when there are at most 20,000, else `resamples` random ones; by hand
    because scipy's permutation test refuses a group of one, and the default run has one similar pair).
    NaN when either group is empty."""
    values, similar = np.asarray(values, float), np.asarray(similar, bool)
    alike, other = values[similar], values[~similar]
    if not len(alike) or not len(other):
        return {"difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan")}
    rng = np.random.default_rng(seed)
    draws = rng.choice(alike, (resamples, len(alike))).mean(1) - rng.choice(other, (resamples, len(other))).mean(1)
    low, high = np.percentile(draws, [2.5, 97.5])
    n, k = len(values), len(alike)
    if math.comb(n, k) <= 20_000:
        labels = np.array([np.isin(np.arange(n), chosen) for chosen in itertools.combinations(range(n), k)])
    else:
        labels = np.array([np.isin(np.arange(n), rng.choice(n, k, replace=False)) for _ in range(resamples)])
    differences = (labels * values).sum(1) / k - (~labels * values).sum(1) / (n - k)
    observed, tolerance = alike.mean() - other.mean(), 1e-12
    one_sided = min((differences >= observed - tolerance).mean(), (differences <= observed + tolerance).mean())
    return {"difference": observed, "ci_low": low, "ci_high": high, "p": float(min(1.0, 2 * one_sided))}


def association(
    combos: pd.DataFrame,
    similarity: pd.DataFrame,
    single: pd.DataFrame,
    methods: list[str],
    similar_pairs: list[tuple[str, str]],
    resamples: int,
    seed: int,
) -> pd.DataFrame:
    """Per method and kind, the evidence on "dissimilar tasks merge better" beyond a bare ρ: Spearman's ρ of data
    cosine similarity against mean normalized accuracy with a bootstrap interval over combinations; the same with
    the members' mean adapter gain over head-only held fixed (partial ρ); and, over pairs, the similar pairs
    (`similarity.similar_pairs`) against the rest. The finding predicts ρ < 0 and a negative contrast."""
    gain = (single["lora_score"] - single["head_only_score"]).set_axis(single["task"])
    alike = {frozenset(pair) for pair in similar_pairs}
    joined = combos[combos["method"].isin(methods)].merge(similarity, on=["combination", "kind"])
    rows = []
    for (method, kind), group in joined.groupby(["method", "kind"], sort=False):
        cosine, score = group["data_cosine"].to_numpy(), group["normalized_accuracy"].to_numpy()
        members = [split_combination(c) for c in group["combination"]]
        rho, p = spearman(cosine, score)
        low, high = rho_interval(cosine, score, resamples, seed)
        partial, partial_p = partial_spearman(cosine, score, np.array([gain[m].mean() for m in members]))
        row = {"method": method, "kind": kind, "n": len(group), "rho": rho, "rho_ci_low": low, "rho_ci_high": high}
        row |= {"partial_rho": partial, "partial_p": partial_p}
        if kind == "pair":
            similar = np.array([frozenset(m) in alike for m in members])
            contrast = group_contrast(score, similar, resamples, seed)
            row |= {"similar_pairs": int(similar.sum()), **{f"contrast_{k}": v for k, v in contrast.items()}}
        rows.append(row)
    return pd.DataFrame(rows)


def association_text(table: pd.DataFrame, method: str, significance: float) -> list[str]:
    """The association evidence for one method (the headline's), in sentences that say what each number can show."""
    rows = table[table["method"] == method].set_index("kind") if len(table) else table
    if "pair" not in rows.index or pd.isna(rows.loc["pair", "rho"]):
        return []
    pair = rows.loc["pair"]
    held = (
        f"partial ρ = {pair['partial_rho']:.2f} (permutation p {pair['partial_p']:.2g})"
        if pd.notna(pair["partial_rho"])
        else "no partial ρ (it needs at least 4 pairs whose gains differ)"
    )
    sentences = [
        f"For {method} over {int(pair['n'])} pairs: ρ(data cosine, normalized accuracy) = {pair['rho']:.2f} "
        f"[{pair['rho_ci_low']:.2f}, {pair['rho_ci_high']:.2f}] (95% bootstrap over pairs); with the members' mean "
        f"adapter gain over head-only held fixed, {held}."
    ]
    if pair.get("similar_pairs", 0) and not pd.isna(pair.get("contrast_difference")):
        verdict = "significant" if pair["contrast_p"] < significance else "not significant"
        sentences.append(
            f"The {int(pair['similar_pairs'])} similar pair(s) (similarity.similar_pairs) against the other "
            f"{int(pair['n'] - pair['similar_pairs'])}: mean normalized accuracy differs by {pair['contrast_difference']:+.3f} "
            f"[{pair['contrast_ci_low']:+.3f}, {pair['contrast_ci_high']:+.3f}] (permutation p {pair['contrast_p']:.2g}, "
            f"{verdict} at {significance:g}; the finding predicts a negative difference)."
        )
    if "triple" in rows.index and not pd.isna(rows.loc["triple", "rho"]):
        triple = rows.loc["triple"]
        partial = (
            f", partial ρ = {triple['partial_rho']:.2f} (p {triple['partial_p']:.2g})"
            if pd.notna(triple["partial_rho"])
            else ""
        )
        sentences.append(
            f"Over {int(triple['n'])} triples: ρ = {triple['rho']:.2f} [{triple['rho_ci_low']:.2f}, "
            f"{triple['rho_ci_high']:.2f}]{partial}."
        )
    return sentences
